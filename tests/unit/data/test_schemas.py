"""Hub schemas turned into assay's rows, without loading anything (the loading itself: tests/integration/test_sources.py)."""

from assay.data.schemas import _split_hh


def test_hh_transcripts_split_into_prompt_and_responses():
    prompt, chosen, rejected = _split_hh("\n\nHuman: hi\n\nAssistant: hello", "\n\nHuman: hi\n\nAssistant: go away")
    assert prompt == "\n\nHuman: hi\n\nAssistant:" and chosen == "hello" and rejected == "go away"
