"""The pure rules of the LoRA lifecycle: which version is active, the quality gate, retention's plan, ratings and
the feedback CSV, per-job strengths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lora_pipelines.domain.feedback import FeedbackCsvError, parse_feedback_csv, parse_rating
from lora_pipelines.domain.lora_selection import CharacterFacts, InspectOutcome, LoraCandidate, select_lora
from lora_pipelines.domain.lora_versions import Version, active_version, gate
from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.retention import ACTIVE, ARCHIVE, PINNED, RECENT, Activation, RetentionLora, plan_retention

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


# --- versions and the quality gate -------------------------------------------------------------------------


def test_the_newest_activation_wins_while_ready_else_the_newest_ready():
    old, new = Version(1, T0, 0.7), Version(2, T0 + DAY, 0.5)
    assert active_version([old, new], None) == new  # no activation: the newest ready, as the spec says
    assert active_version([old, new], 1) == old  # rolled back by hand
    assert active_version([new], 1) == new  # the activated one is no longer ready
    assert active_version([], 1) is None


@pytest.mark.parametrize(("new_score", "active_score", "activates"), [
    (0.70, 0.70, True), (0.68, 0.70, True), (0.671, 0.70, True),  # within the 0.03 tolerance
    (0.66, 0.70, False), (0.30, 0.70, False),
    (None, 0.70, True), (0.30, None, True),  # nothing to compare: the newest ready is used
])
def test_the_gate_compares_scores_within_the_tolerance(new_score, active_score, activates):
    decision = gate(Version(2, T0 + DAY, new_score), Version(1, T0, active_score), tolerance=0.03)
    assert decision.activate is activates
    assert (decision.active_id, decision.active_score, decision.new_score) == (1, active_score, new_score)
    if not activates:
        assert "below active LoRA 1's 0.700" in decision.reason and "lora activate 2" in decision.reason


def test_the_first_lora_is_always_activated_and_a_negative_tolerance_is_refused():
    assert gate(Version(1, T0, 0.1), None).activate
    with pytest.raises(ValueError, match="tolerance"):
        gate(Version(1, T0, 0.1), None, tolerance=-0.1)


# --- selection: pinned, active, newest ---------------------------------------------------------------------

ANNA = CharacterFacts(id="1", lora_enabled=True)


def _candidates():
    return [LoraCandidate(id=str(i), base_model="flux", trigger_word="anna_p", finished_at=T0 + i * DAY,
                          active=i == 1) for i in (1, 2, 3)]


def _ok(candidate):
    return InspectOutcome.success("flux")


def test_selection_prefers_the_pinned_then_the_active_lora():
    flux = get_model("flux")
    assert select_lora(ANNA, flux, _candidates(), _ok).lora.id == "1"  # active, though 3 is newer
    assert select_lora(ANNA, flux, _candidates(), _ok, pinned_id=2).lora.id == "2"
    unmarked = [LoraCandidate(id=c.id, base_model="flux", finished_at=c.finished_at) for c in _candidates()]
    assert select_lora(ANNA, flux, unmarked, _ok).lora.id == "3"  # no active mark: the newest
    missing = select_lora(ANNA, flux, _candidates(), _ok, pinned_id=9)
    assert (missing.lora, missing.reason) == (None, "pinned_lora_unavailable")


def test_requested_strength_scales_the_clip_strength_alike():
    assert get_model("flux").lora_strengths() == (1.0, 1.0)
    assert get_model("flux").lora_strengths(0.6) == (0.6, 0.6)
    assert get_model("z-image-turbo").lora_strengths(1.5) == (1.5, 0.0)  # its text encoder is never trained


# --- retention's plan ---------------------------------------------------------------------------------------


def _lora(i, days_ago, base="flux", character=1, now=T0 + 100 * DAY):
    return RetentionLora(i, character, base, now - days_ago * DAY, now - days_ago * DAY)


def test_retention_keeps_what_is_in_use_and_archives_only_long_idle_loras():
    now = T0 + 100 * DAY
    loras = [_lora(1, 90), _lora(2, 60), _lora(3, 50), _lora(4, 5), _lora(5, 80, base="qwen-image")]
    # 1 was active until 3 was activated 50 days ago, then 4 five days ago; 2 was refused by the gate
    activations = [Activation(1, "flux", 1, now - 90 * DAY), Activation(1, "flux", 3, now - 50 * DAY),
                   Activation(1, "flux", 4, now - 5 * DAY)]
    decisions = {d.lora.id: d for d in plan_retention(loras, activations, active_ids={4, 5}, pinned_ids={2},
                                                      now=now, max_age=timedelta(days=30))}
    assert decisions[4].action == ACTIVE and decisions[5].action == ACTIVE
    assert decisions[2].action == PINNED
    assert decisions[1].action == ARCHIVE and decisions[1].idle_since == now - 50 * DAY  # replaced by 3
    assert decisions[3].action == RECENT and decisions[3].idle_since == now - 5 * DAY  # replaced by 4 only now


def test_without_activations_a_lora_was_in_use_until_a_newer_one_was_ready():
    now = T0 + 100 * DAY
    loras = [_lora(1, 90), _lora(2, 20), _lora(3, 10)]
    decisions = {d.lora.id: d for d in plan_retention(loras, [], active_ids={3}, pinned_ids=set(), now=now,
                                                      max_age=timedelta(days=15))}
    assert decisions[1].idle_since == now - 20 * DAY and decisions[1].archive
    assert decisions[2].idle_since == now - 10 * DAY and not decisions[2].archive
    with pytest.raises(ValueError, match="max_age"):
        plan_retention(loras, [], set(), set(), now=now, max_age=timedelta(0))


# --- ratings and the CSV ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "verdict"), [("better", "better"), (" Same ", "same"), ("WORSE", "worse"),
                                                ("5", "better"), ("4", "better"), (3, "same"), ("1", "worse")])
def test_ratings_map_to_a_verdict(given, verdict):
    assert parse_rating(given).verdict == verdict


@pytest.mark.parametrize("bad", ["great", "6", "0", "", "4.5", True, None])
def test_bad_ratings_are_refused_in_one_line(bad):
    with pytest.raises(ValueError, match="is not one of better, same, worse or a score from 1 to 5") as info:
        parse_rating(bad)
    assert "\n" not in str(info.value)


def test_a_feedback_csv_reads_every_row():
    rows = parse_feedback_csv(b"\xef\xbb\xbfjob_id,rating,note,rated_by,rated_at\n"
                              b"7,better,\"nice, really\",ann,2025-03-01T10:00:00\n"
                              b"\n8,2,,,2025-03-01T11:00:00+02:00\n")
    assert [(r.line, r.job_id, r.rating.rating, r.rating.verdict, r.note, r.rated_by) for r in rows] == [
        (2, 7, "better", "better", "nice, really", "ann"), (4, 8, "2", "worse", None, None)]
    assert rows[0].rated_at == datetime(2025, 3, 1, 10, tzinfo=UTC)  # no timezone: UTC
    assert rows[1].rated_at == datetime(2025, 3, 1, 9, tzinfo=UTC)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"job,rating\n1,better\n", "line 1: the header has no job_id column"),
    (b"job_id,rating,mood\n1,better,ok\n", "line 1: unknown column 'mood'"),
    (b"job_id,rating\n", "no ratings"),
    (b"job_id,rating\n1,better\n2,superb\n", "line 3: rating 'superb' is not one of"),
    (b"job_id,rating\n1,better\nx,same\n", "line 3: job id 'x' is not a positive integer"),
    (b"job_id,rating\n1,better\n2\n", "line 3: 1 fields, the header has 2"),
    (b"job_id,rating,rated_at\n1,better,yesterday\n", "line 2: rated_at 'yesterday' is not an ISO 8601"),
    (b"job_id,rating,rated_by\n1,better,ann\n2,same,ann\n1,worse,ann\n", "line 4: job 1 is rated by ann again "
                                                                         "(first on line 2)"),
    (b"job_id,rating\n1,\xff\n", "not UTF-8"),
])
def test_a_bad_csv_names_its_line(data, message):
    with pytest.raises(FeedbackCsvError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_feedback_csv(data)
    assert "\n" not in str(info.value)


def test_a_rater_name_must_be_text_of_at_most_200_characters():
    with pytest.raises(FeedbackCsvError, match="line 2: rated_by must be at most 200 characters"):
        parse_feedback_csv(b"job_id,rating,rated_by\n1,better," + b"x" * 201 + b"\n")
    with pytest.raises(FeedbackCsvError, match="line 2: note contains a NUL byte"):
        parse_feedback_csv(b"job_id,rating,note\n1,better,a\x00b\n")
