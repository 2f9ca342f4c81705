"""Task generators, scorers and the pass@k / majority / best-of-k estimators against hand-computed cases."""

import math
from itertools import combinations

import numpy as np
import pytest

from scalelab.data.chars import build_task_dataset, decode_chars, encode_chars
from scalelab.data.people import People
from scalelab.data.scoring import digit_matches, edit_distance, final_answer
from scalelab.data.tasks import Addition, Recall, TaskMix, parse_task, problem_set, write_task_corpus
from scalelab.errors import UserError
from scalelab.evaluate.harness import (
    best_of_k_likelihood,
    emergence_score,
    fit_logistic,
    logistic,
    majority_at_k,
    pass_at_k,
)


def test_addition_formats_and_carries():
    assert Addition(3, "plain").make(123, 489).text == "123+489=612\n"
    assert Addition(3, "reversed").make(123, 489).text == "321+984=216\n"
    p = Addition(3, "scratchpad").make(123, 489)
    assert p.answer == "3+9+0=12,2+8+1=11,1+4+1=06;612" and p.difficulty == 2
    assert Addition(3, "plain").make(999, 1).difficulty == 3
    rng = np.random.default_rng(0)
    for carries in range(4):
        t = Addition(3, "plain", carries=carries)
        assert all(t.sample(rng).difficulty == carries for _ in range(20))
    # every scratchpad's committed answer is the true sum
    t = Addition(4, "scratchpad")
    for _ in range(50):
        q = t.sample(rng)
        a, b = (int(v) for v in q.prompt[:-1].split("+"))
        assert int(t.answer_of(q.answer)) == a + b


def test_generators_are_deterministic_and_test_sets_disjoint():
    mix = TaskMix(tasks=("addition:digits=2,format=plain", "multiplication:digits=2,digits_b=1"), test_size=100)
    t1, t2 = mix.test_sets(), mix.test_sets()
    assert t1 == t2
    s1, s2 = mix.stream(50_000, seed=3), mix.stream(50_000, seed=3)
    assert s1 == s2 and s1 != mix.stream(50_000, seed=4)
    held = {q.prompt for ps in t1.values() for q in ps}
    train_prompts = {line.split("=")[0] + "=" for line in s1.splitlines()}
    assert len(train_prompts) > 1000
    assert not train_prompts & held  # no test problem is ever trained on
    # the test set excludes nothing of itself: distinct prompts
    for ps in t1.values():
        assert len({q.prompt for q in ps}) == len(ps) == 100


def test_problem_set_exhaustion_is_a_clear_error():
    with pytest.raises(UserError, match="distinct problems"):
        problem_set(Addition(1, "plain"), 200, seed=0)


def test_parse_task_errors_name_the_fix():
    assert parse_task("addition:digits=4,format=scratchpad") == Addition(4, "scratchpad")
    with pytest.raises(UserError, match="known tasks"):
        parse_task("subtraction")
    with pytest.raises(UserError, match="format"):
        parse_task("addition:format=roman")
    with pytest.raises(UserError, match="integer"):
        parse_task("addition:digits=three")


def test_people_have_known_entropy_and_recall_asks_their_facts():
    p = People(50, seed=1)
    rows = p.table()
    assert len({r["name"] for r in rows}) == 50 and rows == People(50, seed=1).table()
    assert p.bits_per_person() == pytest.approx(4 + 3 + 6 + 3)
    bio = p.biography(rows[0], np.random.default_rng(0))
    assert all(rows[0][a] in bio for a in p.attributes)
    t = Recall(people=50, seed=1)
    q = t.sample(np.random.default_rng(0))
    name, attr = q.prompt[:-1].split(", ")
    assert {r["name"]: r for r in rows}[name][attr] == q.answer


def test_char_codec_and_dataset(tmp_path):
    text = "12+34=46\nkavo mira, city:lima\n"
    assert decode_chars(encode_chars(text)) == text
    with pytest.raises(UserError, match="alphabet"):
        encode_chars("Ä")
    from scalelab.data.shards import TokenDataset

    mix = TaskMix(tasks=("addition:digits=2,format=plain",), test_size=20)
    ds = TokenDataset(build_task_dataset(mix, 20_000, tmp_path))
    x, y = ds.sample(4, 16, seed=0, step=0)
    assert x.shape == (4, 16) and (x[:, 1:] == y[:, :-1]).all()
    assert ds.tokenizer().decode(encode_chars("12+3=15")) == "12+3=15"
    assert build_task_dataset(mix, 20_000, tmp_path) == ds.path  # cached


def test_task_corpus_mixes_at_the_fraction(tmp_path):
    import json

    mix = TaskMix(tasks=("addition:digits=2,format=plain",), test_size=50)
    base = (f"document {i} about nothing" for i in range(10_000))
    info = write_task_corpus(mix, 1000, tmp_path / "mix.jsonl", base_docs=base, fraction=0.25)
    assert info["task_docs"] + info["base_docs"] == 1000
    assert 0.2 < info["task_docs"] / 1000 < 0.3
    held = {q.prompt for ps in mix.test_sets().values() for q in ps}
    docs = [json.loads(line)["text"] for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    lines = [ln for d in docs if "+" in d for ln in d.splitlines()]
    assert lines and not {ln.split("=")[0] + "=" for ln in lines} & held


def test_scorers_on_hand_computed_cases():
    assert final_answer("scratchpad", "3+9+0=12,2+8+1=11;612\njunk") == "612"
    assert final_answer("plain", "612\n99") == "612"
    assert edit_distance("612", "612") == 0
    assert edit_distance("612", "62") == 1
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert digit_matches("613", "612") == [True, True, False]
    assert digit_matches("6", "612") == [True, False, False]


def test_pass_at_k_matches_the_combinatorial_definition():
    # pass@k = P(at least one correct among k drawn without replacement from n)
    for n, c, k in [(5, 0, 1), (5, 1, 1), (5, 2, 2), (10, 3, 4), (8, 8, 3), (6, 1, 6)]:
        subsets = list(combinations(range(n), k))
        exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_and_best_of_k():
    rng = np.random.default_rng(0)
    assert majority_at_k(["5", "5", "7"], "5", 3, rng) == 1.0
    assert majority_at_k(["5", "7"], "5", 2, rng) == 0.5  # a tie is a coin flip
    assert majority_at_k(["1", "2", "3", "9"], "9", 4, rng) == 0.25
    # k=1 majority is the fraction correct (up to sampling noise over draws)
    est = majority_at_k(["5", "7", "7", "7"], "5", 1, rng, draws=4000)
    assert est == pytest.approx(0.25, abs=0.03)
    assert best_of_k_likelihood(["1", "2", "3"], [-3.0, -0.1, -2.0], "2", 3, rng) == 1
    assert best_of_k_likelihood(["1", "2", "3"], [-3.0, -0.1, -2.0], "3", 3, rng) == 0


def test_logistic_fit_recovers_midpoint_and_width():
    x = np.linspace(3, 7, 9)
    y = logistic(x, 0.02, 0.97, 5.2, 0.3)
    f = fit_logistic(x, y)
    assert f["ok"] and f["midpoint"] == pytest.approx(5.2, abs=1e-3) and f["width"] == pytest.approx(0.3, abs=1e-3)
    assert not fit_logistic(x[:3], y[:3])["ok"]  # too few points: no fit, no exception
    # a sudden jump scores higher than a smooth rise of the same size
    assert emergence_score(x, (x > 5).astype(float)) > 2 * emergence_score(x, (x - 3) / 4)
    assert math.isfinite(emergence_score(x, np.zeros_like(x)))


def test_beta_binomial_fit_recovers_the_difficulty_distribution():
    from scalelab.labs.testtime import beta_binomial_fit

    rng = np.random.default_rng(0)
    p = rng.beta(0.4, 3.0, size=3000)
    f = beta_binomial_fit(rng.binomial(32, p), 32)
    assert f["beta_alpha"] == pytest.approx(0.4, rel=0.1) and f["beta_beta"] == pytest.approx(3.0, rel=0.15)
    assert f["difficulty_distribution"] == "heavy left tail"
    same = beta_binomial_fit(rng.binomial(32, np.full(3000, 0.05)), 32)  # every problem equally hard
    assert same["difficulty_distribution"] == "homogeneous"


def test_heldout_problems_are_fixed_by_the_task_and_never_mixed_into_training_text():
    from scalelab.data.tasks import heldout, mix_documents

    t = parse_task("addition:digits=2")
    assert heldout(t, 50, trained=True) == heldout(t, 50, trained=True)  # every rung evaluates the same problems
    assert len(heldout(parse_task("addition:digits=1"), 200, trained=True)) == 20  # a fifth of 100 problems
    assert len(heldout(parse_task("addition:digits=1"), 200, trained=False)) == 100  # evaluation only: all
    base = ((f"doc{i}", "x" * 1000) for i in range(300))
    docs = list(mix_documents(base, ("addition:digits=1", "addition:digits=2"), 0.2, 200))
    task_docs = [text for doc_id, text in docs if doc_id.startswith("task:")]
    frac = sum(map(len, task_docs)) / sum(len(text) for _, text in docs)
    assert 0.19 < frac < 0.21, frac
    held = {q.prompt for s in ("addition:digits=1", "addition:digits=2") for q in heldout(parse_task(s), 200, True)}
    prompts = {ln.split("=")[0] + "=" for d in task_docs for ln in d.splitlines()}
    assert len(prompts) > 500 and not prompts & held


def test_pairs_file_is_a_task_and_bad_lines_are_named(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"prompt": "capital of peru?", "answer": "lima"}\n\n{"prompt": "2+2=", "answer": "4"}\n')
    t = parse_task(str(f))
    assert [p.text for p in t.problems] == ["capital of peru?lima\n", "2+2=4\n"] and t.num_distinct == 2
    f.write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match=r"qa.jsonl:1 must be a JSON object with \"prompt\" and \"answer\""):
        parse_task(str(f))
    f.write_text('{"prompt": "a", "answer": "two\\nlines"}\n')
    with pytest.raises(UserError, match="on one line"):
        parse_task(str(f))
    with pytest.raises(UserError, match="does not exist"):
        parse_task(str(tmp_path / "missing.jsonl"))


def test_codecs_split_a_problem_where_the_model_reads_it(tmp_path):
    """The answer's ids are the rest of the whole line's encoding (lm-evaluation-harness's split), so
    a BPE model is scored on the tokenization it trained on; characters split trivially."""
    from scalelab.data.tokenizer import train_bpe
    from scalelab.evaluate.codec import CHARS, TokenizerCodec

    ctx, ans = CHARS.pair("12+34=", "46")
    assert ctx == encode_chars("\n12+34=") and ans == encode_chars("46\n")
    tok = train_bpe(["12+34=46\n" * 50, "def f(x):\n    return x + 1\n" * 50], vocab_size=300)
    codec = TokenizerCodec(tok)
    for prompt, answer in (("12+34=", "46"), ("def f(x):", "return")):
        ctx, ans = codec.pair(prompt, answer)
        assert ctx + ans == tok.encode("\n" + prompt + answer + "\n").ids
        assert codec.decode(ans) == answer + "\n"
    assert all("\n" in codec.decode([i]) for i in codec.stop_ids) and codec.encode("\n")[0] in codec.stop_ids
