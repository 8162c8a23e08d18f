from assay.data.skills import generate_skills
from assay.data.text import normalise_answer

DOMAINS = ["copy", "reverse", "sort", "count", "add"]


def make(seed=0):
    return generate_skills(DOMAINS, {"train": 60, "val": 10, "test": 20}, [1, 2, 3], seed)


def test_ids_are_stable_and_unique():
    a, b = make(0), make(0)
    for split in a:
        assert [r["id"] for r in a[split]] == [r["id"] for r in b[split]]
        assert len({r["id"] for r in a[split]}) == len(a[split])
    assert a["train"][0]["id"] == "copy/train/00000"


def test_held_out_prompts_are_not_in_training():
    data = make(1)
    train = {r["prompt"] for r in data["train"]}
    assert not train & {r["prompt"] for r in data["test"]}
    assert not train & {r["prompt"] for r in data["val"]}


def test_answers_are_correct_and_alternatives_wrong():
    for r in make(2)["train"]:
        words = r["prompt"].split()
        body = words[words.index(":") + 1 : -1]
        if r["source"] == "copy":
            expected = body
        elif r["source"] == "reverse":
            expected = body[::-1]
        elif r["source"] == "sort":
            expected = sorted(body)
        elif r["source"] == "count":
            expected = [str(body.count(words[1]))]
        else:
            plus = body.index("+")
            expected = list(str(int("".join(body[:plus])) + int("".join(body[plus + 1 :]))))
        assert r["answer"] == " ".join(expected), r
        assert all(normalise_answer(x) != r["answer"] for x in r["responses"][1:3]), r
        assert r["ratings"] == [3.0, 2.0, 1.0, 0.0]
        assert r["difficulty"] in (1, 2, 3)


def test_difficulty_makes_inputs_longer():
    rows = make(3)["train"]
    mean_len = lambda d: sum(len(r["prompt"].split()) for r in rows if r["difficulty"] == d) / max(1, sum(r["difficulty"] == d for r in rows))  # noqa: E731
    assert mean_len(1) < mean_len(2) < mean_len(3)
