"""The degenerate-output detector of the string judge (:mod:`mosr.evaluation.judge` calls it).

:func:`degenerate_reason` names the first rule that fires (thresholds: :class:`DegenerateThresholds`):
``empty``, ``repetition``, ``loop``, ``loop-prefix``, ``phrase-repetition``, ``prompt-echo``,
``non-words``, ``symbol-soup``, ``junk-tail``, ``mixed-scripts``, ``letter-soup``,
``dangling-article``, ``fragment``, ``too-short``. The rules target what representation-erased models
emit (loops, junk before or after fluent text, letter / symbol / script soup, echoes of the prompt)
and leave code, arithmetic, lists and short numeric answers answered.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def normalise(text: str) -> str:
    """Lower-case, straighten curly apostrophes / quotes, collapse whitespace."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


_WORD = re.compile(r"\S+")
#: one character repeated 10+ times or a 2-4 character unit ("12", "m.n.") repeated 5+ times
_CHAR_LOOP = re.compile(r"(.)\1{9,}|(.{2,4}?)\2{4,}", re.DOTALL)
_BPE_MARKERS = re.compile("[\u0120\u010a\u0109\u2581]")  # Ġ Ċ ĉ ▁
_PUNCT = ".,;:!?\"'()[]{}<>*_`~-–—/\\|#"
#: Words that on their own answer nothing ("The", "Sure", "I"): a short text needs another word.
FILLER_WORDS = frozenset("a an and but here i it of ok okay so sure the this that to well you".split())
_FRAGMENT = re.compile(r"\s*[a-z]+(?![\w'’-])")  # the text opens with a lowercase word
_CODE = re.compile(r"[`(){}\[\]=<>;$]")  # a lowercase start is normal in code and commands
_CJK = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")  # one writing system for the mixed-scripts rule
_URL = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)  # URL or e-mail
#: 42, $7.99, 15%, 3pm, 10kg, 1st; dates, times, ranges, phone numbers: 2023-06-06, 10:30, 1998-2004
_NUMBER = re.compile(r"[+-]?[$€£¥]?\d[\d,.]*(?:%|[a-zA-Z]{1,3})?|\d{1,4}(?:[-/:.]\d{1,4}){1,3}")
_LIST_MARKER = re.compile(r"(?:[-*•+]|\(?\w{1,3}[.)]|#{1,6})$")  # "-", "1.", "a)", "(ii)", "##"
#: a template placeholder / markup tag on its own: [Name], {email}, #{name}, {{x}}, <tag>
_PLACEHOLDER = re.compile(r"(?<!\S)[#$%@]?[\[{<]{1,2}[^\s\[\]{}<>]{1,40}[\]}>]{1,2}(?=[\s,.;:!?]|$)")
_MATH_VARIABLE = re.compile(
    r"(?<![\w'])[Ll]et [a-z](?![\w'])"  # "let a be", "a + b", "= a"
    r"|(?<![\w'])[a-z]\s*[=+*/^<>²³]|[=+*/^<>]\s*[a-z](?![\w'])"
)
#: an article followed by a preposition / another article, or ending a sentence ("is a with", "I'm a.")
_DANGLING = re.compile(r"(?<![\w'’.-])(?:a|an|the)(?:\.(?=\s|$)|\s+(?:with|of|from|by|at|on|the|a|an)(?![\w'’-]))")


def _script(ch: str) -> str:
    """The script of a letter: the first word of its Unicode name, CJK / kana / Hangul merged."""
    head = "LATIN" if ch.isascii() else unicodedata.name(ch, "?").split(" ", 1)[0]
    return "CJK" if head in _CJK else head


def _word_like(token: str) -> bool | None:
    """Whether a whitespace token looks like a word, number, URL or e-mail address; None for pure
    punctuation."""
    core = token.strip(_PUNCT)
    if not core:
        return None
    if _BPE_MARKERS.search(core):  # byte-level BPE artefacts leaking into decoded text
        return False
    if _NUMBER.fullmatch(core) or _URL.fullmatch(core):
        return True
    parts = [p for p in re.split(r"['’\-./]", core) if p]
    for part in parts:
        if part.isdigit() and len(part) <= 4 and any(p.isalpha() for p in parts):
            continue  # "25-year-old", "COVID-19"
        if (
            not part.isalpha()
            or not (part.islower() or part.istitle() or part.isupper())
            or len(part) > 25
            or (len(part) > 3 and part.isascii() and not re.search(r"[aeiouyAEIOUY]", part))
            or (not part.isascii() and len({_script(c) for c in part}) > 1)
        ):  # "abcкон": token soup
            return False
    return True


_NUM = r"[$€£<]*\d[\d,.]*%?"  # a number ("<" for GSM8K's <<16-3=13>> calculator notes)
_EQUATION = re.compile(_NUM + r"(?:\s*[-+*/×÷x^]\s*" + _NUM + r")+\s*=\s*" + _NUM)  # "16 - 3 - 4 = 9"
_SOUP_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]{3,}")  # letter runs, digit runs, clusters of 3+ symbols


def word_share(text: str) -> tuple[int, float]:
    """``(tokens, share of real words)`` for the symbol-soup rule. ``text`` is split into letter runs,
    digit runs and clusters of 3+ symbols (``")),"``); a real word is a word-like (:func:`_word_like`)
    letter run of 2+ letters; numbers (also inside mixes such as ``21000x20020FBi``), odd letter runs
    (``FBi``, ``nbsp``), symbol clusters and template placeholders (``#{name}``, ``[Name]``: one token
    each) count against it; an equation (``9 * 2 = 18``) counts as one word and a single ASCII letter
    (``x``, ``a``, ``I``) not at all."""
    placeholders = len(_PLACEHOLDER.findall(text))
    text = _PLACEHOLDER.sub(" ", text)
    equations = len(_EQUATION.findall(text))
    marks = [
        bool(tok.isalpha() and _word_like(tok))
        for tok in _SOUP_TOKEN.findall(_EQUATION.sub(" ", text))
        if not (len(tok) == 1 and tok.isascii() and tok.isalpha())
    ]
    n = equations + placeholders + len(marks)
    return n, (equations + sum(marks)) / n if n else 1.0


def _letter_token(token: str) -> bool:
    """A single letter or a dotted initialism ("D", "S.G.E.S."); the words "I" / "a" / "A" are not."""
    core = token.strip(_PUNCT)
    return core not in ("", "I", "a", "A") and all(len(p) == 1 and p.isalpha() for p in core.split("."))


def _is_sentence(text: str, words: Sequence[str]) -> bool:
    """One line, capitalised, ending in ``.!?``, with a content word (not filler, not a letter)."""
    s = text.strip().rstrip("\"')]*_ ")
    return (
        "\n" not in s
        and s[:1].isupper()
        and s.endswith((".", "!", "?"))
        and any(not _letter_token(w) and w.strip(_PUNCT).lower() not in FILLER_WORDS for w in words)
    )


@dataclass(frozen=True)
class _Layout:
    """Where the tokens of a text sit: ``line[i]`` is the line of token ``i``; ``opens`` the tokens
    that open a line (or follow its list marker); ``items`` the lines that are list items."""

    line: list[int]
    opens: set[int]
    items: set[int]

    def list_pattern(self, positions: Sequence[int]) -> bool:
        """Occurrences in distinct lines, each opening its line or inside a list item."""
        lines = [self.line[p] for p in positions]
        return len(set(lines)) == len(lines) and all(
            p in self.opens or ln in self.items for p, ln in zip(positions, lines)
        )


def _tokens_and_layout(text: str) -> tuple[list[str], _Layout]:
    """Normalised tokens of ``text`` (as ``_WORD.findall(normalise(text))``) and their :class:`_Layout`."""
    tokens: list[str] = []
    layout = _Layout([], set(), set())
    for k, line in enumerate(text.splitlines()):
        words = _WORD.findall(normalise(line))
        if not words:
            continue
        item = len(words) > 1 and bool(_LIST_MARKER.match(words[0]))
        if item:
            layout.items.add(k)
        layout.opens.update((len(tokens), len(tokens) + item))
        layout.line.extend([k] * len(words))
        tokens.extend(words)
    return tokens, layout


def repetition_share(tokens: Sequence[str], max_n: int = 8, min_n: int = 1, layout: _Layout | None = None) -> float:
    """Largest share of ``tokens`` covered by repeats of one n-gram (``min_n`` ≤ n ≤ ``max_n``),
    counting only n-grams that occur at least 3 times; 0 for short texts. With ``layout``
    (:func:`_tokens_and_layout`), an n-gram whose occurrences lie in different lines, each opening its
    line or inside a list item ("- 200 ml of water / flour", verse anaphora), is a list pattern, not
    a loop, and is skipped."""
    total, best = len(tokens), 0.0
    if total < 8:
        return 0.0
    for n in range(min_n, min(max_n, total // 3) + 1):
        where: dict[tuple[str, ...], list[int]] = {}
        for i in range(total - n + 1):
            where.setdefault(tuple(tokens[i : i + n]), []).append(i)
        for pos in sorted(where.values(), key=len, reverse=True):
            if len(pos) < 3:
                break
            gram = tokens[pos[0] : pos[0] + n]
            if (layout is not None and layout.list_pattern(pos)) or all(not w.strip(_PUNCT) for w in gram):
                continue  # a list pattern or table rules ("|", "---"): look at the next most frequent n-gram
            # non-overlapping occurrences approximate how much of the text the loop covers
            best = max(best, min(1.0, len(pos) * n / total))
            break
    return best


def loop_spans(tokens: Sequence[str], min_copies: float = 2.5, max_unit: int = 64) -> list[tuple[int, int]]:
    """``(start, end)`` token spans where one unit of ≤ ``max_unit`` tokens repeats back to back at
    least ``min_copies`` times (``i'm a 25-year-old male, i'm a 25-year-old male, i'm a 25-`` is 2.75
    copies: the last copy may be cut off mid-unit and mid-token, as at the token budget). Tokens are
    compared without surrounding punctuation."""
    keys = [t.strip(_PUNCT) or t for t in tokens]
    n, spans = len(keys), []
    for p in range(1, min(n // 2, max_unit) + 1):
        same = [keys[i] == keys[i + p] for i in range(n - p)]
        if not same[-1] and keys[-1 - p].startswith(keys[-1]):
            same[-1] = True  # the final token is a truncated copy
        i = 0
        for eq, group in itertools.groupby(same):
            run = sum(1 for _ in group)
            if eq and (run + p) / p >= min_copies:
                spans.append((i, i + run + p))
            i += run
    return spans


def _covered(spans: Sequence[tuple[int, int]], n: int) -> int:
    hit = bytearray(n)
    for a, b in spans:
        hit[a:b] = b"\x01" * (b - a)
    return sum(hit)


def _prefix(spans: Sequence[tuple[int, int]]) -> int:
    """How many leading tokens the loops cover (spans that touch or overlap, starting at token 0)."""
    end = 0
    for a, b in sorted(spans):
        if a > end:
            break
        end = max(end, b)
    return end


def _copies(needle: Sequence[str], hay: Sequence[str], min_tail: float = 0.5) -> int:
    """Occurrences of ``needle`` in ``hay``; a cut-off copy (≥ ``min_tail`` of it) at the end counts."""
    needle, hay = list(needle), list(hay)
    k, count, i, end = len(needle), 0, 0, 0
    while k and i <= len(hay) - k:
        if hay[i : i + k] == needle:
            count, i, end = count + 1, i + k, i + k
        else:
            i += 1
    if count and any(hay[-r:] == needle[:r] for r in range(min(k - 1, len(hay) - end), 0, -1) if r >= min_tail * k):
        count += 1
    return count


@dataclass(frozen=True)
class DegenerateThresholds:
    """When a response counts as degenerate (see :func:`degenerate_reason` for the rules)."""

    repetition: float = 0.5  # share of words (characters, lines) covered by one repeated unit / by loops
    loop_copies: float = 2.5  # loop: a unit repeated back to back this many times (last copy may be cut)
    loop_prefix: float = 0.1  # loop-prefix: a loop opening the text covers this share of the words ...
    loop_prefix_min: int = 4  # ... and at least this many ("Ha ha ha, ...", "Row, row, row ..." stay answered),
    loop_prefix_exact: int = 3  # or this many verbatim copies, case included ("Grand Grand Grand")
    long_unit: int = 4  # phrase-repetition: an n-gram of at least this many words ...
    long_repetition: float = 0.35  # ... seen 3+ times covers this share of the words
    echo_min_words: int = 4  # prompt-echo: prompts of this many words (first echo_max_words of them) ...
    echo_max_words: int = 12
    echo_copies: int = 2  # ... found this many times in the response
    min_word_like: float = 0.5  # minimum share of word-like tokens
    min_real_words: float = 0.3  # symbol-soup: minimum share of real words among words, numbers, symbols ...
    soup_min_tokens: int = 5  # ... once there are this many (so "42", "$799", "12 + 7 = 19" stay answered)
    junk_tail: float = 0.5  # junk-tail: trailing non-word tokens hold this share of the non-space characters
    min_tokens: int = 4  # below this the non-words rule needs *all* tokens to be non-words
    min_words: int = 3  # fewer word-like tokens: too-short unless a clean number or a complete sentence
    letter_soup: float = 0.6  # share of single letters / initialism letters (with < min_words real words)
    dangling_words: int = 60  # dangling-article: one per this many words (so at least one in short texts)
    fragment_max_words: int = 8  # a lowercase start counts as a word fragment below this many words
    max_scripts: int = 3  # this many scripts (Latin, Cyrillic, CJK, ...) in one text ...
    main_script: float = 0.75  # ... with none covering this share of the letters: token soup


DEFAULT_THRESHOLDS = DegenerateThresholds()


def _dangling_articles(text: str) -> int:
    """How many articles dangle (:data:`_DANGLING`); ``a.`` opening a line is a list label, and none
    do in math that names a variable ``a`` ("let a be", "a + b")."""
    if _MATH_VARIABLE.search(text):
        return 0
    count = 0
    for m in _DANGLING.finditer(text):
        line = text[text.rfind("\n", 0, m.start()) + 1 : m.start()]
        count += not (m.group(0).endswith(".") and not line.strip())
    return count


def _echo_key(text: str) -> list[str]:
    return [k for k in (w.strip(_PUNCT) for w in _WORD.findall(normalise(text))) if k]


def degenerate_reason(
    text: str, thresholds: DegenerateThresholds = DEFAULT_THRESHOLDS, prompt: str | None = None
) -> str | None:
    """Why ``text`` is degenerate, or None. Rules, first match wins (``t`` = ``thresholds``):

    * ``empty``: whitespace only;
    * ``repetition``: one n-gram (n ≤ 8) seen 3+ times, one character repeated 10+ times or a 2–4
      character unit repeated 5+ times (``1212121212``, ``m.n.m.n.m.n.m.n.m.n.``), or one line seen
      3+ times (list markers ignored) covers ≥ ``t.repetition`` of the words / non-space characters /
      non-empty lines; an n-gram whose occurrences open different lines or sit in different list items
      (``- 200 ml of water`` / ``- 200 ml of flour``) is a list pattern and does not count;
    * ``loop``: units repeated back to back ≥ ``t.loop_copies`` times, the last copy possibly cut off
      (:func:`loop_spans`: ``I'm a 25-year-old male, I'm a 25-year-old male, I'm a 25-``), cover
      ≥ ``t.repetition`` of the words;
    * ``loop-prefix``: such a loop opens the text and covers ≥ ``t.loop_prefix`` of the words and
      ≥ ``t.loop_prefix_min`` words, or ≥ ``t.loop_prefix_exact`` words when the copies are verbatim,
      case included (``lou lou lou lou lou`` or ``Grand Grand Grand`` before a fluent sentence: what
      erased models emit first; a natural stutter capitalises only its first word: "Ha ha ha, ...");
    * ``phrase-repetition``: an n-gram of ≥ ``t.long_unit`` words seen 3+ times covers
      ≥ ``t.long_repetition`` of the words (list patterns excepted, as for ``repetition``);
    * ``prompt-echo`` (only with ``prompt``): the first ``t.echo_max_words`` words of a prompt of
      ≥ ``t.echo_min_words`` words occur ≥ ``t.echo_copies`` times (a cut-off last copy counts);
    * ``non-words``: < ``t.min_word_like`` of the tokens are word-like (:func:`_word_like`), or none
      is in a text under ``t.min_tokens`` tokens;
    * ``symbol-soup``: ≥ ``t.soup_min_tokens`` tokens, < ``t.min_real_words`` of them real words
      (:func:`word_share`), and not one complete sentence (see ``too-short``; "Scores: 90, 85, 77 and
      88." passes): number / symbol / placeholder soup such as ``1/ 200 000; 100 000; 100 0001`` or
      ``What = #{name} #{email} ...``, which passes ``non-words``. Equations count as words, so
      arithmetic stays answered; a bare number list or array literal without prose does not;
    * ``junk-tail``: the trailing run of non-word tokens holds ≥ ``t.junk_tail`` of the non-space
      characters and the text has no code characters (``Naruto's medical record is 0x00010001...``);
    * ``mixed-scripts``: letters of ≥ ``t.max_scripts`` scripts, none ≥ ``t.main_script`` of them;
    * ``letter-soup``: ≥ ``t.letter_soup`` of the letters-or-words are single letters / letters of
      dotted initialisms (``D S.G.E.S.``, ``I A B C D``, ``a.b.c.d.f.g``; an initialism counts once
      per letter), < ``t.min_words`` words have two or more letters, and no code characters;
    * ``dangling-article``: a lowercase article followed by a preposition or another article or
      ending a sentence (``is a with the``, ``who is a.``), at least one per ``t.dangling_words`` words
      (``a.`` opening a line is a list label; math with a variable ``a`` is exempt);
    * ``fragment``: a lowercase first word ("ozilla.", "ingly the"; chat models capitalise, and a
      dictionary check would need a word list), < ``t.fragment_max_words`` words, no code characters,
      not a URL / e-mail address;
    * ``too-short``: < ``t.min_words`` words ("The", "Sure", "A") unless the text is a number without
      non-word tokens (numeric answers such as "42" stay answered; ``}} 001 sh0`` does not) or one
      complete sentence: capitalised, ending in ``.!?``, with a word outside :data:`FILLER_WORDS`
      ("Paris." passes; "Paris" and "Sure." do not). With 64 new tokens real answers this short are
      rare; a bare "Paris" as not answered errs to low ASR.
    """
    t = thresholds
    if not text.strip():
        return "empty"
    tokens, layout = _tokens_and_layout(text)
    if len(tokens) >= 8 and repetition_share(tokens, layout=layout) >= t.repetition:
        return "repetition"
    # a long run without spaces ("!!!!!!!!", "/de/de/de") is one token: check characters too
    looped = sum(m.end() - m.start() for m in _CHAR_LOOP.finditer(text))
    if looped >= t.repetition * len("".join(text.split())):  # share of the non-space characters
        return "repetition"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    items = [ln.split(None, 1)[1] if len(ln.split()) > 1 and _LIST_MARKER.match(ln.split()[0]) else ln for ln in lines]
    top = Counter(items).most_common(1)[0][1]
    if top >= 3 and top >= t.repetition * len(lines):
        return "repetition"
    spans = loop_spans(tokens, t.loop_copies)
    if _covered(spans, len(tokens)) >= t.repetition * len(tokens):
        return "loop"
    least = t.loop_prefix * len(tokens)
    if _prefix(spans) >= max(t.loop_prefix_min, least):
        return "loop-prefix"
    verbatim = loop_spans(_WORD.findall(text), t.loop_copies)  # the same tokens, case kept
    if _prefix(verbatim) >= max(t.loop_prefix_exact, least):
        return "loop-prefix"
    if repetition_share(tokens, max_n=12, min_n=t.long_unit, layout=layout) >= t.long_repetition:
        return "phrase-repetition"
    if prompt is not None:
        key = _echo_key(prompt)
        if len(key) >= t.echo_min_words and _copies(key[: t.echo_max_words], _echo_key(text)) >= t.echo_copies:
            return "prompt-echo"
    raw = _WORD.findall(text)
    marks = [_word_like(w) for w in raw]
    flags = [f for f in marks if f is not None]
    if not any(flags) or (len(tokens) >= t.min_tokens and sum(flags) / len(flags) < t.min_word_like):
        return "non-words"
    words = [w for w, f in zip(raw, marks) if f]
    n, share = word_share(text)
    if n >= t.soup_min_tokens and share < t.min_real_words and not _is_sentence(text, words):
        return "symbol-soup"
    tail = sum(len(w) for w in itertools.takewhile(lambda w: not _word_like(w), reversed(raw)))
    if tail >= t.junk_tail * len("".join(raw)) and not _CODE.search(text):
        return "junk-tail"
    scripts = Counter(_script(c) for c in text if c.isalpha())
    if len(scripts) >= t.max_scripts and max(scripts.values()) < t.main_script * sum(scripts.values()):
        return "mixed-scripts"
    letters = sum(len(w.strip(_PUNCT).replace(".", "")) for w in words if _letter_token(w))
    others = sum(not _letter_token(w) for w in words)
    long_words = sum(len(re.sub(r"[^\w]", "", w)) > 1 and not _letter_token(w) for w in words)
    if (
        letters
        and letters >= t.letter_soup * (letters + others)
        and long_words < t.min_words
        and not _CODE.search(text)
    ):  # "x = 5" is code
        return "letter-soup"
    dangling = _dangling_articles(text)
    if dangling and dangling * t.dangling_words >= len(words):
        return "dangling-article"
    if (
        _FRAGMENT.match(text)
        and len(words) < t.fragment_max_words
        and not _CODE.search(text)
        and not _URL.match(text.strip())
    ):
        return "fragment"
    clean_number = re.search(r"\d", text) and all(f is not False for f in marks)
    if len(words) < t.min_words and not clean_number and not _is_sentence(text, words):
        return "too-short"
    return None


def is_degenerate(text: str, prompt: str | None = None) -> bool:
    """True when :func:`degenerate_reason` names a rule."""
    return degenerate_reason(text, prompt=prompt) is not None
