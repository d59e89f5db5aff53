"""The words and operators bash reads from a recipe's command, found once, by one scanner.

A recipe's command is shell text (the origin's format), but everything runrecipe does to it (drop the
executor flag, add ranks, add extra args) must happen to words, never to text that was already quoted.
This scanner follows bash's quoting rules closely enough to split the text into `Word`s (each with the
exact value the program receives, when the word holds no expansion) and `Op`s (`;`, `&&`, `|`,
redirections, newlines). It is fed in pieces, so `render.substitute` can ask, at each placeholder, which
quoting context the placeholder lands in, and refuse the ones no quoting can make safe: inside `$( )`,
backticks, `$(( ))`, `${ }`, `$' '`, a comment, right after `$` or a backslash. Heredocs are refused
outright (their bodies are not words). Work is linear in the text: runs of ordinary characters are
taken by one regular expression each.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RenderError

SINGLE, DOUBLE = "'", '"'
CMDSUB, BACKTICK, ARITH, PARAM, ANSI = "$(", "`", "$((", "${", "$'"
NESTED_NAMES = {CMDSUB: "a command substitution $( )", BACKTICK: "backticks", ARITH: "arithmetic $(( ))",
                PARAM: "a parameter expansion ${ }", ANSI: "ANSI-C quoting $' '"}
CONTROL = {";", "\n", "&", "&&", "|", "||", "|&", ";;", "(", ")"}
_OP_CHARS = ";&|<>()"
_OPERATORS = CONTROL | {"<", ">", ">>", "<>", ">&", "<&", ">|", "&>", "&>>", "<<<", "<<", "<<-"}
_BARE_RUN = re.compile(r"[^\s'\"\\$`;&|<>()#*?\[{~]+")
_BLANKS = re.compile(r"[ \t\r]+")
_SINGLE_RUN = re.compile(r"[^']+")
_DOUBLE_RUN = re.compile(r"[^\"\\$`]+")
_NESTED_RUN = re.compile(r"[^'\"\\$`()}]+")
_NAME_START = re.compile(r"[A-Za-z0-9_@*#?$!-]")


class ShellSyntaxError(RenderError):
    """The command is not shell text runrecipe can split into words safely."""


@dataclass(frozen=True)
class Word:
    """One shell word: `value` is what the program receives when `plain` (no expansion in it)."""

    value: str
    raw: str
    plain: bool = True
    wrapped: bool = False            # the author continued the line (`\` newline) just before it


@dataclass(frozen=True)
class Op:
    """A control operator (`;`, `&&`, `|`, newline, ...) or a redirection (`>`, `2>&`, `<<<`, ...)."""

    text: str

    @property
    def control(self) -> bool:
        return self.text in CONTROL


Token = Word | Op


class Scanner:
    """Feed shell text in pieces; `context` says where the next character would land; `finish` gives tokens."""

    def __init__(self) -> None:
        self.tokens: list[Token] = []
        self._stack: list[str] = []      # quoting and nesting, innermost last
        self._depth: list[int] = []      # open ( inside each $( / $(( level
        self._raw: list[str] = []
        self._value: list[str] = []
        self._in_word = False
        self._plain = True
        self._op = ""
        self._escaped = False
        self._dollar = False             # a `$` whose meaning depends on the next character
        self._comment = False
        self._continued = False          # a line continuation since the last word

    @property
    def context(self) -> str:
        """'bare', SINGLE or DOUBLE where a value can be quoted; otherwise what makes it impossible."""
        if self._escaped:
            return "right after a backslash"
        if self._dollar:
            return "right after $"
        if self._comment:
            return "a comment"
        if not self._stack:
            return "bare"
        nested = [c for c in self._stack if c not in (SINGLE, DOUBLE)]
        if nested:
            return NESTED_NAMES[nested[-1]]
        return self._stack[-1] if self._stack else "bare"

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self._escaped:
                i = self._after_backslash(text, i)
            elif self._dollar:
                i = self._after_dollar(text, i)
            elif self._comment:
                end = text.find("\n", i)
                if end < 0:
                    return
                self._comment, i = False, end
            elif not self._stack:
                i = self._bare(text, i)
            elif self._stack[-1] == SINGLE:
                i = self._quoted(text, i, _SINGLE_RUN, "'")
            elif self._stack[-1] == DOUBLE:
                i = self._double(text, i)
            else:
                i = self._nested(text, i)

    def quoted(self, raw: str, value: str) -> None:
        """A value render quoted for the current `context` (bare, SINGLE or DOUBLE): it joins the word as
        one literal piece and leaves the context as it was, so it is added without scanning it again."""
        if self._op:
            self._end_op()
        self._raw.append(raw)
        self._value.append(value)
        self._in_word = True

    def finish(self) -> list[Token]:
        if self._stack:
            opened = self._stack[-1]
            what = {SINGLE: "a ' quote", DOUBLE: 'a " quote'}.get(opened, NESTED_NAMES.get(opened, opened))
            raise ShellSyntaxError(f"the command cannot be parsed as shell words: {what} is never closed")
        if self._dollar:
            self._dollar = False
            self._add("$", "$")
        self._escaped = False  # a trailing backslash joins nothing
        self._end_word()
        self._end_op()
        return self.tokens

    # -- top level -----------------------------------------------------------------------------
    def _bare(self, text: str, i: int) -> int:
        """Runs of ordinary characters and blanks are taken here in a loop (they change no state but the
        word); anything else is one step, after which `feed` looks at the state again."""
        n = len(text)
        while i < n:
            run = _BARE_RUN.match(text, i)
            if run:
                if self._op:
                    self._end_op()
                self._raw.append(run.group())
                self._value.append(run.group())
                self._in_word = True
                i = run.end()
            elif text[i] in " \t\r":
                if self._op:
                    self._end_op()
                self._end_word()
                i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]
            else:
                return self._bare_special(text[i], i)
        return i

    def _bare_special(self, ch: str, i: int) -> int:
        """One character with a meaning at the top level: an operator, newline, quote, `\\`, `$`, `#`, glob."""
        if ch in _OP_CHARS:
            self._operator(ch)
            return i + 1
        self._end_op()
        if ch == "\n":
            self._end_word()
            self.tokens.append(Op("\n"))
            self._continued = False
        elif ch == "#" and not self._in_word:
            self._comment = True
        elif ch == "\\":
            self._escaped = True
        elif ch in (SINGLE, DOUBLE):
            self._open(ch)
        elif ch == "$":
            self._dollar = True
        elif ch == "`":
            self._open(BACKTICK, plain=False)
        else:  # * ? [ { ~: globbing, brace or tilde expansion may change the word
            self._plain = False
            self._add(ch, ch)
        return i + 1

    def _operator(self, ch: str) -> None:
        if self._op and self._op.lstrip("0123456789") + ch in _OPERATORS:
            self._op += ch
            return
        self._end_op()
        if ch in "<>" and self._in_word and "".join(self._raw).isdigit():
            self._op = "".join(self._raw) + ch  # `2>`: the digits name a file descriptor
            self._raw, self._value, self._in_word, self._plain = [], [], False, True
            return
        self._end_word()
        self._op = ch

    def _end_op(self) -> None:
        op, self._op = self._op, ""
        if not op:
            return
        if op.lstrip("0123456789") in ("<<", "<<-"):
            raise ShellSyntaxError("the command uses a heredoc (<<), whose body runrecipe cannot quote "
                                   "values into; write the file from a mod, or pass it with <<<")
        self.tokens.append(Op(op))

    def _end_word(self) -> None:
        if self._in_word:  # (out of a word, the word's state is already empty)
            self.tokens.append(Word("".join(self._value), "".join(self._raw), self._plain, self._continued))
            self._continued = False
            self._raw, self._value, self._in_word, self._plain = [], [], False, True

    def _add(self, raw: str, value: str) -> None:
        self._raw.append(raw)
        self._value.append(value)
        self._in_word = True

    def _open(self, context: str, plain: bool = True) -> None:
        self._end_op()
        self._stack.append(context)
        if context in (CMDSUB, ARITH):
            self._depth.append(0)
        self._plain = self._plain and plain
        self._add(context, "")

    def _close(self, raw: str) -> None:
        if self._stack.pop() in (CMDSUB, ARITH):
            self._depth.pop()
        self._add(raw, "")

    # -- backslash and dollar, which look one character ahead --------------------------------------
    def _after_backslash(self, text: str, i: int) -> int:
        self._escaped = False
        ch = text[i]
        inner = self._stack[-1] if self._stack else ""
        if ch == "\n" and inner in ("", DOUBLE):
            self._continued = self._continued or not (inner or self._in_word)
            return i + 1  # a line continuation: nothing at all
        if not inner:
            self._end_op()
            self._add("\\" + ch, ch)
        elif inner == DOUBLE:
            self._add("\\" + ch, ch if ch in '$`"\\' else "\\" + ch)
        else:
            self._add("\\" + ch, "")
        return i + 1

    def _after_dollar(self, text: str, i: int) -> int:
        self._dollar = False
        self._end_op()
        if text.startswith("((", i):
            self._open(ARITH, plain=False)
            return i + 2
        ch = text[i]
        opened = {"(": CMDSUB, "{": PARAM, "'": ANSI}.get(ch)
        if opened and not (opened == ANSI and self._stack):
            self._open(opened, plain=False)
            return i + 1
        if _NAME_START.match(ch) or (ch == DOUBLE and not self._stack):
            self._plain = False
        self._add("$", "$")
        return i

    # -- inside quotes and nestings ---------------------------------------------------------------------
    def _quoted(self, text: str, i: int, run_re: re.Pattern[str], close: str) -> int:
        run = run_re.match(text, i)
        if run:
            self._add(run.group(), run.group())
            return run.end()
        self._close(close)
        return i + 1

    def _double(self, text: str, i: int) -> int:
        ch = text[i]
        if ch == "\\":
            self._escaped = True
        elif ch == "$":
            self._dollar = True
        elif ch == "`":
            self._open(BACKTICK, plain=False)
        elif ch == DOUBLE:
            self._close(ch)
        else:
            return self._quoted(text, i, _DOUBLE_RUN, DOUBLE)
        return i + 1

    def _nested(self, text: str, i: int) -> int:
        """Inside $( ), $(( )), ${ }, backticks or $' ': only the balance matters (the word is not plain)."""
        inner = self._stack[-1]
        run = _NESTED_RUN.match(text, i)
        if run:
            self._add(run.group(), "")
            return run.end()
        ch = text[i]
        if ch == "\\":
            self._escaped = True
            return i + 1
        if inner == ANSI:
            if ch == "'":
                self._close(ch)
            else:
                self._add(ch, "")
            return i + 1
        if (inner == BACKTICK and ch == "`") or (inner == PARAM and ch == "}"):
            self._close(ch)
        elif inner in (CMDSUB, ARITH) and ch in "()":
            return self._paren(ch, text, i)
        elif ch in (SINGLE, DOUBLE) and inner != ARITH:
            self._open(ch)
        elif ch == "$":
            self._dollar = True
        elif ch == "`":
            self._open(BACKTICK)
        else:
            self._add(ch, "")
        return i + 1

    def _paren(self, ch: str, text: str, i: int) -> int:
        """Parentheses inside $( ) or $(( )): count them; the unmatched `)` (or `))`) closes."""
        if ch == "(" or self._depth[-1]:
            self._depth[-1] += 1 if ch == "(" else -1
            self._add(ch, "")
            return i + 1
        if self._stack[-1] == ARITH:
            self._close("))")
            return i + 2 if text.startswith(")", i + 1) else i + 1
        self._close(")")
        return i + 1


def split(text: str) -> list[Token]:
    """Words and operators of shell text (no placeholders left)."""
    scanner = Scanner()
    scanner.feed(text)
    return scanner.finish()

