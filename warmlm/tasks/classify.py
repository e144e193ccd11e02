"""Classification by label scoring: every label's exact log-probability as the model's reply.

The prompt is the model's own chat template: [instruction (system) + input (user) + assistant
header] and then the label, so log P(label | input) = Σ log softmax of the label's tokens, each
given the ones before it. Probabilities are the softmax over labels of those sums (both are
reported). Everything before the input (the system prompt, the user header) is the
*instruction prefix*: it stays in KV across calls (`engine.scoring`), so a call prefills only
its inputs' tokens, all inputs of a call batched together.

Labels where one's tokens are a prefix of another's ("good" and "good enough") are scored with
the end-of-turn token appended, i.e. P(the reply is exactly the label), so the shorter label is
not favoured for free; otherwise P(the reply starts with the label) is enough and needs no
extra decode for single-token labels.

`multi_label`: each label is judged on its own, as a yes/no question asked after the input
("Label: X. Does this label apply?") with P(yes) = P(yes) / (P(yes) + P(no)) over the reply's
first token (both casings); the input is prefilled once and the questions of all labels are
decoded in one batch, each in a copy of the input's sequence. A label applies when P ≥ 0.5;
`logprobs` are then the model's log P(yes). This is calibrated per label (labels need not
compete, none or all may apply), unlike a softmax over labels.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warmlm.engine.request import RequestError
from warmlm.engine.scoring import LAST, Branch, ScoreItem, ScoreResult, ScoreTask
from warmlm.tasks.chat import ChatTemplate, Message

if TYPE_CHECKING:
    from warmlm.engine.engine import Engine
    from warmlm.service import Service

SENTIMENT = "sentiment"
DEFAULT_LABELS = ("positive", "negative")
MAX_LABELS = 64
MAX_INPUTS = 256
MAX_TASK_CHARS = 8000
PASS = 0.5  # multi_label: a label applies from this probability on

_SENTINEL = "\u27e6warmlm-input\u27e7"

SENTIMENT_PROMPT = (
    "You are a sentiment classifier for reviews and comments written in English or Chinese "
    "(中文). Decide whether the writer's overall feeling is positive (satisfied, likes it, "
    "recommends it: 满意、喜欢、推荐、好评) or negative (dissatisfied, dislikes it, complains: "
    "不满意、失望、差评). Reply with one lowercase word: positive or negative."
)
SENTIMENT_ANY = (
    "You are a sentiment classifier for texts written in English or Chinese (中文). Decide the "
    "writer's overall sentiment."
)
MULTI_SUFFIX = (
    "The user sends a text followed by one candidate label. Reply yes if the label applies to "
    "the text, otherwise no."
)
QUESTION = "\n\nLabel: {label}\nDoes this label apply to the text? Answer yes or no."
YES = ("yes", "Yes")
NO = ("no", "No")

Tokenize = Callable[[str, bool, bool], list[int]]


class ClassifyError(RequestError):
    """A classification request that cannot be served as asked (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.param = param
        self.code = code


# -- the request --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifyRequest:
    inputs: tuple[str, ...]
    labels: tuple[str, ...] = DEFAULT_LABELS
    task: str = SENTIMENT
    multi_label: bool = False

    @classmethod
    def build(
        cls,
        inputs: str | Sequence[str],
        labels: Sequence[str] | None = None,
        task: str | None = None,
        multi_label: bool = False,
    ) -> ClassifyRequest:
        """Checked: non-empty inputs (≤ MAX_INPUTS) and distinct non-empty labels (≤ MAX_LABELS)."""
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        if not items:
            raise ClassifyError("input must not be empty", "input")
        if len(items) > MAX_INPUTS:
            raise ClassifyError(f"at most {MAX_INPUTS} inputs per call, got {len(items)}", "input")
        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                where = "input" if isinstance(inputs, str) else f"input[{i}]"
                raise ClassifyError(f"{where} is empty", where)
        names = list(DEFAULT_LABELS if labels is None else labels)
        if not names:
            raise ClassifyError("labels must not be empty", "labels")
        if len(names) > MAX_LABELS:
            raise ClassifyError(f"at most {MAX_LABELS} labels, got {len(names)}", "labels")
        seen: set[str] = set()
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise ClassifyError(f"labels[{i}] is empty", f"labels[{i}]")
            if name in seen:
                raise ClassifyError(f"duplicate label {name!r}", "labels")
            seen.add(name)
        text = SENTIMENT if task is None else task
        if not text.strip():
            raise ClassifyError("task must not be empty", "task")
        if len(text) > MAX_TASK_CHARS:
            raise ClassifyError(f"task is longer than {MAX_TASK_CHARS} characters", "task")
        return cls(tuple(items), tuple(names), text, bool(multi_label))


# -- prompts ------------------------------------------------------------------------------------
def instruction(task: str, labels: Sequence[str], multi_label: bool) -> str:
    """The system prompt: the task, then how to answer."""
    if multi_label:
        head = SENTIMENT_ANY if task == SENTIMENT else task.strip()
        return f"{head}\n\n{MULTI_SUFFIX}"
    if task == SENTIMENT and tuple(labels) == DEFAULT_LABELS:
        return SENTIMENT_PROMPT
    head = SENTIMENT_ANY if task == SENTIMENT else task.strip()
    return f"{head}\n\nReply with exactly one of these labels and nothing else: " + ", ".join(
        labels
    )


@dataclass(frozen=True)
class Prompt:
    """The token parts of one (task, labels, mode): shared prefix, the turn's tail, branches."""

    prefix: tuple[int, ...]
    tail: tuple[int, ...]
    branches: tuple[Branch, ...]
    groups: tuple[tuple[int, ...], ...] = ()  # label j's branches (its casings); () = one each
    yes_no: tuple[int, int] = (0, 0)  # multi_label: how many picks are yes-variants, no-variants

    def group(self, j: int) -> tuple[int, ...]:
        return self.groups[j] if self.groups else (j,)


@dataclass
class Prepared:
    """A checked, tokenized classification: run `task` on the engine, then `response`."""

    request: ClassifyRequest
    prompt: Prompt
    task: ScoreTask
    item_tokens: list[int]

    def response(self, result: ScoreResult, model: str) -> dict[str, Any]:
        data = [
            item_result(i, self.request, self.prompt, scores)
            for i, scores in enumerate(result.logprobs)
        ]
        n = len(self.request.inputs)
        p = result.prefix_tokens
        prompt_tokens = n * p + sum(self.item_tokens)
        branch_tokens = n * sum(len(b.tokens) for b in self.prompt.branches)
        cached = n * p - (0 if result.prefix_cached else p)
        return {
            "object": "list",
            "model": model,
            "data": data,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + branch_tokens,
                "cached_tokens": cached,
            },
        }


def item_result(
    index: int, req: ClassifyRequest, prompt: Prompt, scores: list[list[float]]
) -> dict[str, Any]:
    labels = req.labels
    if req.multi_label:
        n_yes, _ = prompt.yes_no
        probs, lps = [], []
        for picks in scores:
            yes, no = _logsumexp(picks[:n_yes]), _logsumexp(picks[n_yes:])
            probs.append(1.0 / (1.0 + math.exp(no - yes)))
            lps.append(yes)
        top = max(range(len(labels)), key=lambda j: probs[j])
        return {
            "index": index,
            "label": labels[top],
            "labels": [name for name, p in zip(labels, probs, strict=True) if p >= PASS],
            "probabilities": dict(zip(labels, probs, strict=True)),
            "logprobs": dict(zip(labels, lps, strict=True)),
        }
    sums = [_logsumexp([math.fsum(scores[b]) for b in prompt.group(j)]) for j in range(len(labels))]
    probs = softmax(sums)
    top = max(range(len(labels)), key=lambda j: sums[j])
    return {
        "index": index,
        "label": labels[top],
        "probabilities": dict(zip(labels, probs, strict=True)),
        "logprobs": dict(zip(labels, sums, strict=True)),
    }


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = math.fsum(exps)
    return [e / total for e in exps]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def label_branches(labels: Sequence[Sequence[int]], eot: int | None) -> tuple[Branch, ...]:
    """One branch per label: decode all but its last token; pick every token's log-prob. With
    `eot`, when one label's tokens start another's, every label ends with it (exact match)."""
    seqs = [tuple(t) for t in labels]
    prefixy = any(a != b and len(a) < len(b) and b[: len(a)] == a for a in seqs for b in seqs)
    if prefixy and eot is not None:
        seqs = [(*s, eot) for s in seqs]
    out = []
    for toks in seqs:
        picks = ((LAST, toks[0]), *((m - 1, toks[m]) for m in range(1, len(toks))))
        out.append(Branch(toks[:-1], picks))
    return tuple(out)


def casings(
    labels: Sequence[str], tokenize: Tokenize
) -> tuple[list[list[int]], tuple[tuple[int, ...], ...]]:
    """The token sequences scored for each label: the label as given, lower-case and
    Capitalized (a reply "Positive" is the label "positive"); the label as given only when
    two labels would share a form. Returns the forms and, per label, its forms' indexes."""
    variants = [dict.fromkeys((x, x.lower(), x[:1].upper() + x[1:])) for x in labels]
    lowered = [x.lower() for x in labels]
    if len(set(lowered)) < len(lowered):
        variants = [{x: None} for x in labels]
    forms: list[list[int]] = []
    groups = []
    seen: set[tuple[int, ...]] = set()
    for names in variants:
        group = []
        for name in names:
            toks = tokenize(name, False, False)
            if tuple(toks) in seen:
                continue
            seen.add(tuple(toks))
            group.append(len(forms))
            forms.append(toks)
        groups.append(tuple(group))
    return forms, tuple(groups)


class Classifier:
    """Builds scoring tasks from requests for one model (chat template + tokenizer + context)."""

    def __init__(self, template: ChatTemplate, tokenize: Tokenize, n_ctx: int) -> None:
        self.template = template
        self.tokenize = tokenize
        self.n_ctx = n_ctx
        self._prompts: dict[tuple[str, tuple[str, ...], bool], Prompt] = {}
        self._eot: int | None | bool = False  # False: not looked up yet

    def prepare(self, req: ClassifyRequest) -> Prepared:
        prompt = self.prompt(req.task, req.labels, req.multi_label)
        items = []
        widest = max(len(b.tokens) for b in prompt.branches)
        for i, text in enumerate(req.inputs):
            tokens = self.tokenize(text.strip(), False, False)
            if not req.multi_label:
                tokens += prompt.tail
            need = len(prompt.prefix) + len(tokens) + widest + 1
            if need > self.n_ctx:
                where = "input" if len(req.inputs) == 1 else f"input[{i}]"
                raise ClassifyError(
                    f"{where} needs {need} tokens with the instruction and labels, more than "
                    f"the context of {self.n_ctx} tokens",
                    where,
                    "context_length_exceeded",
                )
            items.append(ScoreItem(tuple(tokens), prompt.branches))
        return Prepared(
            req, prompt, ScoreTask(prompt.prefix, items), [len(t.tokens) for t in items]
        )

    def prompt(self, task: str, labels: tuple[str, ...], multi_label: bool) -> Prompt:
        key = (task, labels, multi_label)
        found = self._prompts.get(key)
        if found is None:
            found = self._build(task, labels, multi_label)
            if len(self._prompts) >= 64:
                self._prompts.pop(next(iter(self._prompts)))
            self._prompts[key] = found
        return found

    def _build(self, task: str, labels: tuple[str, ...], multi_label: bool) -> Prompt:
        messages = [
            Message("system", instruction(task, labels, multi_label)),
            Message("user", _SENTINEL),
        ]
        head, tail = self._split(messages)
        prefix = tuple(self.tokenize(self.template.strip_leading_bos(head), True, True))
        tail_tokens = tuple(self.tokenize(tail, False, True))
        label_tokens = [self.tokenize(name, False, False) for name in labels]
        by_tokens: dict[tuple[int, ...], str] = {}
        for name, toks in zip(labels, label_tokens, strict=True):
            other = by_tokens.setdefault(tuple(toks), name)
            if other != name:
                raise ClassifyError(f"labels {other!r} and {name!r} are the same text", "labels")
        if not multi_label:
            forms, groups = casings(labels, self.tokenize)
            branches = label_branches(forms, self.eot())
            return Prompt(prefix, tail_tokens, branches, groups)
        yes = [self.tokenize(w, False, False)[0] for w in YES]
        no = [self.tokenize(w, False, False)[0] for w in NO]
        questions = []
        for name in labels:
            qtoks = (*self.tokenize(QUESTION.format(label=name), False, False), *tail_tokens)
            last = len(qtoks) - 1
            questions.append(Branch(qtoks, tuple((last, t) for t in (*yes, *no))))
        return Prompt(prefix, tail_tokens, tuple(questions), yes_no=(len(yes), len(no)))

    def _split(self, messages: list[Message]) -> tuple[str, str]:
        text = self.template.render(messages, add_generation_prompt=True)
        if text.count(_SENTINEL) != 1:
            raise ClassifyError("the chat template does not render the input verbatim")
        head, tail = text.split(_SENTINEL)
        return head, tail

    def eot(self) -> int | None:
        """The token that ends an assistant turn in this template (ChatML: <|im_end|>)."""
        if self._eot is False:
            msgs = [Message("user", "x"), Message("assistant", _SENTINEL)]
            try:
                text = self.template.render(msgs, add_generation_prompt=False)
                after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
                toks = self.tokenize(after, False, True) if after.strip() else []
                self._eot = toks[0] if toks else None
            except Exception:  # a template that refuses this conversation: no terminator
                self._eot = None
        return None if self._eot is False else self._eot  # type: ignore[return-value]


# -- the service's classifier ---------------------------------------------------------------------
_CLASSIFIERS: weakref.WeakKeyDictionary[Engine, Classifier] = weakref.WeakKeyDictionary()


def classifier_for(service: Service) -> Classifier:
    """The (cached) classifier of a ready service's engine."""
    engine = service.engine
    assert engine is not None and service.template is not None, "service is ready"
    found = _CLASSIFIERS.get(engine)
    if found is None:
        runner = engine.runner
        found = _CLASSIFIERS[engine] = Classifier(
            service.template,
            lambda text, add, parse: runner.tokenize(text, add_special=add, parse_special=parse),
            runner.n_ctx,
        )
    return found


def classify_blocking(service: Service, req: ClassifyRequest) -> dict[str, Any]:
    """Classify from a plain thread (CLI, terminal chat): the engine thread does the work."""
    prepared = classifier_for(service).prepare(req)
    assert service.engine is not None
    result = service.engine.submit_task(prepared.task).wait()
    return prepared.response(result, service.info.model_name)


@dataclass
class Confusion:
    """A confusion matrix over labels, with accuracy and macro-F1 (for `warmlm bench`)."""

    labels: list[str]
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, truth: str, predicted: str) -> None:
        self.counts[(truth, predicted)] = self.counts.get((truth, predicted), 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def accuracy(self) -> float | None:
        if not self.total:
            return None
        return sum(self.counts.get((x, x), 0) for x in self.labels) / self.total

    def f1(self, label: str) -> float:
        tp = self.counts.get((label, label), 0)
        fp = sum(n for (t, p), n in self.counts.items() if p == label and t != label)
        fn = sum(n for (t, p), n in self.counts.items() if t == label and p != label)
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    def macro_f1(self) -> float | None:
        if not self.total or not self.labels:
            return None
        return sum(self.f1(x) for x in self.labels) / len(self.labels)

    def rows(self) -> list[list[object]]:
        """One row per true label: its counts per predicted label (then 'other')."""
        predicted = [*self.labels, *sorted({p for _, p in self.counts} - set(self.labels))]
        return [[t, *(self.counts.get((t, p), 0) for p in predicted)] for t in self.labels]

    def columns(self) -> list[str]:
        return [*self.labels, *sorted({p for _, p in self.counts} - set(self.labels))]


def format_item(item: dict[str, Any]) -> str:
    """One line for the terminal: `positive 0.97 (negative 0.03)`."""
    probs: dict[str, float] = item["probabilities"]
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    head = f"{item['label']} {ranked[0][1]:.2f}" if ranked else item["label"]
    rest = ", ".join(f"{name} {p:.2f}" for name, p in ranked[1:4])
    if "labels" in item:
        head = ", ".join(item["labels"]) or "(none)"
        rest = ", ".join(f"{name} {p:.2f}" for name, p in ranked[:4])
    return f"{head} ({rest})" if rest else head
