"""Prompts the way A1111 reads them: emphasis weights, BREAK, scheduled edits and alternation.

Two stages, as in A1111:
1. schedule: `[from:to:when]` and `[a|b]` are resolved per denoising step into plain prompt texts;
2. attention: each text becomes (fragment, weight) pairs from `(word)`, `[word]`, `(word:1.3)` and escapes.
Encoding those texts into embeddings (75-token chunks, emphasis) lives in `conditioning.py`.

Pure Python: no torch here, so the grammar is testable on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRequest

ROUND_MULTIPLIER = 1.1  # what one pair of () multiplies attention by; [] divides by it
BREAK = "BREAK"


# ---------------------------------------------------------------- stage 1: schedules

@dataclass(frozen=True)
class _Scheduled:
    before: list  # nodes; None when the `from` part is absent ([to:when])
    after: list
    when: float  # resolved to a step number by _resolve_when
    number: str  # the literal, because "5" and ".5" mean different things


@dataclass(frozen=True)
class _Alternate:
    options: list  # one node list per option


class _NoParse(Exception):
    pass


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+", re.S)
_WHITESPACE = re.compile(r"\s+")
_STRAY = "[]():"  # bracket characters and colons allowed as literal text outside any construct


class _ScheduleParser:
    """Recursive descent over A1111's schedule grammar.

    A `prompt` is a run of plain text, whitespace and constructs: `(p)`, `(p:p)` and `[p]` (kept as
    text: weights are read in stage 2), `[p:p:N]`, `[p:N]` (edits) and `[p|p|...]` (alternation).
    Outside any construct, unmatched brackets and colons are literal text. When the whole prompt does
    not fit the grammar (a `|` outside brackets, say) it is used as it is, for every step.
    """

    def __init__(self, text: str):
        self.text = text

    def parse(self) -> list:
        nodes: list = []
        position = 0
        while position < len(self.text):
            construct = self._construct(position)
            if construct is not None:
                node, position = construct
                nodes.append(node)
                continue
            char = self.text[position]
            if char in _STRAY:
                nodes.append(char)
                position += 1
                continue
            match = _PLAIN.match(self.text, position)
            if match is None:  # only "|" can be here
                raise _NoParse
            nodes.append(match.group())
            position = match.end()
        return nodes

    def _prompt(self, position: int) -> tuple[list, int]:
        """Plain text, whitespace and constructs, up to the first character that ends a prompt."""
        nodes: list = []
        while position < len(self.text):
            construct = self._construct(position)
            if construct is not None:
                node, position = construct
                nodes.append(node)
                continue
            match = _PLAIN.match(self.text, position)
            if match is None:
                break
            nodes.append(match.group())
            position = match.end()
        return nodes, position

    def _construct(self, position: int):
        char = self.text[position] if position < len(self.text) else ""
        if char == "(":
            return self._round(position)
        if char == "[":
            for attempt in (self._scheduled, self._alternate, self._square):
                found = attempt(position)
                if found is not None:
                    return found
        return None

    def _expect(self, position: int, char: str) -> int:
        if position < len(self.text) and self.text[position] == char:
            return position + 1
        raise _NoParse

    def _round(self, position: int):
        try:
            inner, end = self._prompt(position + 1)
            nodes = ["(", *inner]
            if end < len(self.text) and self.text[end] == ":":
                weight, end = self._prompt(end + 1)
                nodes += [":", *weight]
            end = self._expect(end, ")")
            return nodes + [")"], end
        except _NoParse:
            return None

    def _square(self, position: int):
        try:
            inner, end = self._prompt(position + 1)
            end = self._expect(end, "]")
            return ["[", *inner, "]"], end
        except _NoParse:
            return None

    def _scheduled(self, position: int):
        try:
            first, end = self._prompt(position + 1)
            end = self._expect(end, ":")
            number = self._number(end)
            if number is not None:  # [to:when]
                literal, end = number
                return _Scheduled(None, first, 0.0, literal), self._expect(end, "]")
            second, end = self._prompt(end)
            end = self._expect(end, ":")
            number = self._number(end)
            if number is None:
                raise _NoParse
            literal, end = number
            return _Scheduled(first, second, 0.0, literal), self._expect(end, "]")
        except _NoParse:
            return None

    def _number(self, position: int):
        """[whitespace] NUMBER [whitespace] "]" -> (literal, position of the "]"), else None."""
        space = _WHITESPACE.match(self.text, position)
        start = space.end() if space else position
        match = _NUMBER.match(self.text, start)
        if match is None:
            return None
        end = match.end()
        space = _WHITESPACE.match(self.text, end)
        end = space.end() if space else end
        if end < len(self.text) and self.text[end] == "]":
            return match.group(), end
        return None

    def _alternate(self, position: int):
        try:
            first, end = self._prompt(position + 1)
            options = [first]
            while end < len(self.text) and self.text[end] == "|":
                option, end = self._prompt(end + 1)
                options.append(option)
            if len(options) < 2:
                raise _NoParse
            return _Alternate(options), self._expect(end, "]")
        except _NoParse:
            return None


def _resolve_when(literal: str, steps: int) -> int:
    """A1111: a number with a decimal point is a fraction of the steps, else a step number; capped at steps."""
    value = float(literal)
    if "." in literal:
        value *= steps
    return min(steps, int(value))


def _walk(nodes: list, visit) -> None:
    for node in nodes:
        visit(node)
        if isinstance(node, list):
            _walk(node, visit)
        elif isinstance(node, _Scheduled):
            _walk(node.before or [], visit)
            _walk(node.after, visit)
        elif isinstance(node, _Alternate):
            for option in node.options:
                _walk(option, visit)


def _text_at(nodes: list, step: int, steps: int) -> str:
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, list):  # an emphasis group, kept as text for stage 2
            parts.append(_text_at(node, step, steps))
        elif isinstance(node, _Scheduled):
            chosen = node.before if step <= _resolve_when(node.number, steps) else node.after
            parts.append(_text_at(chosen or [], step, steps))
        else:
            parts.append(_text_at(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(parts)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, text)] for a prompt over `steps` steps, as A1111's prompt editing computes it.

    >>> prompt_schedule("a [b:c:0.5] d", 10)
    [(5, 'a b d'), (10, 'a c d')]
    """
    try:
        nodes = _ScheduleParser(prompt).parse()
    except _NoParse:
        return [(steps, prompt)]
    ends = {steps}

    def collect(node):
        if isinstance(node, _Scheduled):
            when = _resolve_when(node.number, steps)
            if when >= 1:
                ends.add(when)
        elif isinstance(node, _Alternate):
            ends.update(range(1, steps + 1))

    _walk(nodes, collect)
    return [(end, _text_at(nodes, end, steps)) for end in sorted(ends)]


def entry_for_step(schedule: list[tuple[int, str]], step: int) -> int:
    """Index of the schedule entry used at denoising step `step` (0-based, counted as A1111 counts)."""
    for index, (end, _) in enumerate(schedule):
        if step <= end:
            return index
    return len(schedule) - 1


# ---------------------------------------------------------------- stage 2: attention weights

_ATTENTION = re.compile(r"""
    \\[()\[\]\\] | \\              # escapes; a lone backslash vanishes
  | \( | \[
  | :\s*([+-]?[.\d]+)\s*\)       # the end of (text:weight)
  | \) | ]
  | [^\\()\[\]:]+                # text
  | :
""", re.X)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """(fragment, weight) pairs; ("BREAK", -1) marks a forced chunk break. A1111's rules:

    (x) multiplies by 1.1, [x] divides by 1.1, (x:w) multiplies by w, unclosed brackets close at the
    end, \\( \\) \\[ \\] \\\\ are literal, and neighbours with equal weights merge.
    """
    pieces: list[list] = []  # [text, weight]; lists, because weights are multiplied in place
    rounds: list[int] = []
    squares: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece[1] != -1:
                piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(pieces))
        elif token == "[":
            squares.append(len(pieces))
        elif weight is not None and rounds:
            try:
                factor = float(weight)
            except ValueError:
                raise InvalidRequest(f"prompt: {weight!r} in {token!r} is not a number", "prompt") from None
            multiply(rounds.pop(), factor)
        elif token == ")" and rounds:
            multiply(rounds.pop(), ROUND_MULTIPLIER)
        elif token == "]" and squares:
            multiply(squares.pop(), 1 / ROUND_MULTIPLIER)
        else:
            for index, part in enumerate(_BREAK_SPLIT.split(token)):
                if index:
                    pieces.append([BREAK, -1])
                pieces.append([part, 1.0])
    for start in rounds:
        multiply(start, ROUND_MULTIPLIER)
    for start in squares:
        multiply(start, 1 / ROUND_MULTIPLIER)
    if not pieces:
        return [("", 1.0)]
    merged: list[list] = [pieces[0]]
    for piece in pieces[1:]:
        last = merged[-1]
        if piece[1] == last[1] and piece[1] != -1:  # BREAK markers stay separate
            last[0] += piece[0]
        else:
            merged.append(piece)
    return [(text, weight) for text, weight in merged]


# ---------------------------------------------------------------- extra networks: <lora:name:weight>

_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkTag:
    """One `<kind:name:args>` tag. For LoRA: text encoder and UNet multipliers (A1111's te/unet)."""

    kind: str
    name: str
    text_encoder: float = 1.0
    unet: float = 1.0
    tag: str = ""

    @property
    def weight(self) -> float:
        return self.unet


def _multiplier(tag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidRequest(f"prompt: {tag}: {value!r} is not a number", "prompt") from None


def extract_networks(prompt: str) -> tuple[str, list[NetworkTag]]:
    """Remove `<kind:name[:te[:unet]]>` tags from a prompt, as A1111 does; also `te=` / `unet=` forms."""
    tags: list[NetworkTag] = []

    def take(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2).split(":")
        name = args[0].strip()
        positional = [a.strip() for a in args[1:] if "=" not in a]
        named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        named = {k.strip(): v.strip() for k, v in named.items()}
        te = _multiplier(match.group(0), named.get("te", positional[0] if positional else "1"))
        unet = _multiplier(match.group(0), named.get("unet", positional[1] if len(positional) > 1 else str(te)))
        tags.append(NetworkTag(kind.lower(), name, te, unet, match.group(0)))
        return ""

    return _NETWORK_TAG.sub(take, prompt), tags
