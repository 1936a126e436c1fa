"""Typed, nested config sections as plain data: dicts and JSON in and out, `--set PATH=VALUE`.

A section is a dataclass whose fields are int, float, bool, str, a tuple of ints, one of those
or None, or another section. `Section.from_dict` checks every value's type and names the field
path in its error; `set_path` parses a command-line value by the field's type.
"""
import dataclasses
import difflib
import json
import math
import types
import typing


class ConfigError(ValueError):
    """A config value, field or file that is not valid; the message names it."""


def _optional(field_type):
    """(inner type, whether None is allowed)."""
    if isinstance(field_type, types.UnionType) or typing.get_origin(field_type) is typing.Union:
        inner = [t for t in typing.get_args(field_type) if t is not type(None)]
        return inner[0], True
    return field_type, False


def type_name(field_type):
    inner, nullable = _optional(field_type)
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            tuple: "a list of integers"}.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{name} or null" if nullable else name


def check_type(path, value, field_type):
    """`value` converted to `field_type` (list -> tuple, int -> float), or ConfigError."""
    inner, nullable = _optional(field_type)
    if value is None and nullable:
        return None
    valid = (
        (inner is bool and isinstance(value, bool))
        or (inner is int and isinstance(value, int) and not isinstance(value, bool))
        or (inner is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (inner is str and isinstance(value, str))
        or (inner is tuple and isinstance(value, (list, tuple))
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    )
    if not valid:
        raise ConfigError(f"{path}={value!r} must be {type_name(field_type)}")
    if inner is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{path}={value!r} must be a finite number")
    return tuple(value) if inner is tuple else value


def parse_text(path, text, field_type):
    """A command-line string -> a value of `field_type` (ConfigError naming the field)."""
    inner, nullable = _optional(field_type)
    lowered = text.strip().lower()
    if nullable and lowered in ("none", "null"):
        return None
    try:
        if inner is bool:
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if inner is int:
            return int(text)
        if inner is float:
            return check_type(path, float(text), float)
        if inner is tuple:
            return tuple(int(v) for v in text.strip("[]() ").split(",") if v.strip())
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"{path}={text!r} must be {type_name(field_type)}") from None
    return text


class Section:
    """Mixin for the config dataclasses."""

    @classmethod
    def field_types(cls):
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values, path=""):
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise ConfigError(f"{path.rstrip('.') or cls.__name__} must be an object of fields, "
                              f"not {values!r}")
        types_ = cls.field_types()
        unknown = sorted(set(values) - set(types_))
        if unknown:
            raise ConfigError(f"unknown field {path}{unknown[0]!s}; valid fields of "
                              f"{path.rstrip('.') or cls.__name__}: {', '.join(types_)}")
        kwargs = {}
        for name, value in values.items():
            field_type = types_[name]
            if isinstance(field_type, type) and issubclass(field_type, Section):
                kwargs[name] = field_type.from_dict(value, f"{path}{name}.")
            else:
                kwargs[name] = check_type(f"{path}{name}", value, field_type)
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except ValueError as error:
            raise ConfigError(f"{path}{error}" if path else str(error)) from None

    def to_dict(self):
        out = {}
        for name in self.field_types():
            value = getattr(self, name)
            if isinstance(value, Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON: {error}") from None
        return cls.from_dict(values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def updated(self, changes):
        """A copy with nested `changes` applied, e.g. `{"detector": {"kind": "grid"}}`."""
        return type(self).from_dict(merge(self.to_dict(), changes))

    @classmethod
    def field_paths(cls, prefix=""):
        """Every leaf field as (dotted path, type)."""
        for name, field_type in cls.field_types().items():
            if isinstance(field_type, type) and issubclass(field_type, Section):
                yield from field_type.field_paths(f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", field_type


def merge(base, overrides):
    """Nested dicts: `overrides` on top of `base` (neither is changed)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_path(section_cls, values, assignment):
    """`values` (nested dict for `section_cls`) with one `PATH=VALUE` assignment applied;
    VALUE is parsed by the field's type."""
    path, sep, text = assignment.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ConfigError(f"--set {assignment!r} must be PATH=VALUE, e.g. detector.num_keypoints=16")
    types_ = dict(section_cls.field_paths())
    if path not in types_:
        near = difflib.get_close_matches(path, list(types_), n=2)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        section = path.rpartition(".")[0]
        siblings = [p for p in types_ if p.rpartition(".")[0] == section] or list(types_)
        raise ConfigError(f"unknown field {path!r} in --set {assignment!r}; {hint}valid: "
                          f"{', '.join(siblings)}")
    value = parse_text(path, text, types_[path])
    update = value
    for key in reversed(path.split(".")):
        update = {key: update}
    return merge(values, update)
