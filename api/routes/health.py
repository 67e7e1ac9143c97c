"""Liveness and readiness probes."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.services import Svc
from events.subjects import STREAM_NAME

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers; says nothing about NATS."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(svc: Svc) -> dict[str, Any] | JSONResponse:
    """Ready when NATS is connected, the stream exists and the projection is caught up."""
    checks: dict[str, Any] = {"nats": svc.nc.is_connected}
    if not svc.nc.is_connected:
        return JSONResponse({"status": "not_ready", "checks": checks}, status_code=503)
    try:
        await svc.js.stream_info(STREAM_NAME)
        checks["stream"] = True
        lag = max(0, await svc.store.last_seq() - await svc.reader.checkpoint())
        checks["projection_lag"] = lag
        ok = checks["nats"] and lag <= svc.ready_max_lag
    except Exception as exc:
        checks["error"] = f"{type(exc).__name__}: {exc}"
        ok = False
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return body if ok else JSONResponse(body, status_code=503)
