"""The argument check the model builders share."""


def positive_int(name: str, value) -> int:
    """`value` if it is an int ≥ 1 (not a bool); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    return value
