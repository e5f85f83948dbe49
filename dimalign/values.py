"""Setting values from text: the one parser of the value in a `key=value` override.

Config fields and method knobs both come through here (a knob via `Knob.parse`), so `--set`,
`--grid` and the app's overrides read "3,5", "true" or "0.1" the same way everywhere. Checking
a value's range is not done here: the config validates its fields, a method's spec its knobs.
"""

from __future__ import annotations

from dimalign.errors import ConfigError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def from_text(key: str, hint, text: str):
    """`text` as a value of type `hint`: int, float, bool, str, `int | str` (a number, else the
    word) or `tuple[int, ...]` (comma-separated, returned as a list). A ConfigError names `key`
    when the text is not of that type."""
    if hint == int | str:  # a number or a word such as "auto"; the config checks which
        try:
            return int(text)
        except ValueError:
            return text
    if hint == tuple[int, ...]:
        items = [s for s in text.replace(" ", "").split(",") if s]
        return [from_text(key, int, s) for s in items]
    if hint is bool:
        lowered = text.lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise ConfigError(key, f"expected true or false, got {text!r}")
    try:
        return hint(text)
    except ValueError:
        raise ConfigError(key, f"expected {hint.__name__}, got {text!r}") from None
