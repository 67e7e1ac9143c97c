"""events/chain.py: the bytes `seal` stores read back as the sealed body, whose canonical
form gives the hash, whatever JSON writer stored them (floats, non-ASCII and control
characters included)."""

from events.chain import digest, seal
from events.codec import loads
from events.schema import ResponseRequested, decode


def test_sealed_bytes_read_back_as_the_body_the_hash_was_taken_of() -> None:
    text = 'héllo ✓ \u2028 \x01 "quoted" \\ \n 😀'
    event = ResponseRequested(
        conversation_id="conv_a",
        response_id="resp_a",
        created_at=1,
        model="m",
        input=[
            {
                "id": "msg_a",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            }
        ],
        params={"temperature": 1e-7, "top_p": 0.1, "max_output_tokens": 10**12},
    )
    sealed, data = seal(event, "prev")
    body = loads(data)
    assert body["hash"] == sealed.hash == digest(body)
    assert body["prev_hash"] == "prev" and body["params"]["temperature"] == 1e-7
    assert body["input"][0]["content"][0]["text"] == text
    again = decode(data, 5)
    assert again.model_dump(exclude={"seq"}) == sealed.model_dump(exclude={"seq"})
