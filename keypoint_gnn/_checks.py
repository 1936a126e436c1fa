"""Argument checks shared by the layers: each raises ValueError naming the value and what is valid."""
import math


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")


def check_non_negative_number(name, value):
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")


def check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
