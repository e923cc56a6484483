"""Logging with a configurable threshold, on top of twisted.logger."""

from __future__ import annotations

from twisted.logger import Logger, LogLevel

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error}
_threshold = LogLevel.info


def set_level(name: str) -> None:
    global _threshold
    _threshold = _LEVELS[name]


class LevelLogger(Logger):
    """A Logger that drops events below the configured level."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level < _threshold:
            return
        super().emit(level, format, **kwargs)


def get_logger(namespace: str) -> LevelLogger:
    return LevelLogger(namespace=namespace)
