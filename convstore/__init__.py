"""The composition root: the `convstore` command, the only code that knows every part."""
