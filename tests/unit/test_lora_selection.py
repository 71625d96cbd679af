"""select_lora decides from real LoRA files (inspected headers), and says why when it does not use one."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import numpy as np
import pytest
from safetensors.numpy import save

from lora_pipelines.domain import lora_format
from lora_pipelines.domain.lora_selection import (
    REASONS,
    CharacterFacts,
    InspectOutcome,
    LoraCandidate,
    select_lora,
)
from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.safetensors_inspect import inspect_lora_bytes

T0 = datetime(2025, 1, 1, 12)
ANNA = CharacterFacts(id="anna", lora_enabled=True)


def lora_bytes(base_model: str, trigger: str = "anna_person", with_metadata: bool = True) -> bytes:
    tensors = {k: np.ones(s, np.float16) for k, s in lora_format.lora_tensor_shapes(base_model, 4).items()}
    metadata = (lora_format.trainer_metadata(base_model, trigger, rank=4, steps=10, trainer="t")
                if with_metadata else None)
    return save(tensors, metadata=metadata)


class FakeStore:
    """The I/O side: file bytes by LoRA id; records which candidates were fetched."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    def candidate(self, lora_id: str, base_model: str, minutes: int = 0, **kwargs) -> LoraCandidate:
        data = self.files.get(lora_id, b"")
        return LoraCandidate(id=lora_id, base_model=base_model, trigger_word=kwargs.pop("trigger_word", "anna_person"),
                             sha256=kwargs.pop("sha256", hashlib.sha256(data).hexdigest()),
                             finished_at=T0 + timedelta(minutes=minutes), **kwargs)

    def inspect(self, candidate: LoraCandidate) -> InspectOutcome:
        self.fetched.append(candidate.id)
        if candidate.id not in self.files:
            return InspectOutcome.failure("lora_file_unreachable", "404 from object store")
        return InspectOutcome.success(inspect_lora_bytes(self.files[candidate.id]))


def test_uses_the_newest_ready_lora_for_the_models_family():
    store = FakeStore({"old": lora_bytes("z-image-turbo"), "new": lora_bytes("z-image-turbo"),
                       "fluxy": lora_bytes("flux")})
    candidates = [store.candidate("old", "z-image-turbo", 1), store.candidate("new", "z-image-turbo", 5),
                  store.candidate("fluxy", "flux", 9)]

    selection = select_lora(ANNA, get_model("z-image-turbo"), candidates, store.inspect)

    assert (selection.lora.id, selection.reason, selection.trigger_word) == ("new", None, "anna_person")
    assert selection.used and selection.inspection.base_model == "z-image-turbo"
    assert store.fetched == ["new"]


@pytest.mark.parametrize(("character", "model", "reason"), [
    (None, "flux", "character_not_found"),
    (CharacterFacts(id="anna", lora_enabled=False), "flux", "lora_disabled"),
    (ANNA, "one-2.1", "model_does_not_support_lora"),
])
def test_character_and_model_gates_come_before_any_file_access(character, model, reason):
    store = FakeStore({"l1": lora_bytes("flux")})
    selection = select_lora(character, get_model(model), [store.candidate("l1", "flux")], store.inspect)
    assert (selection.lora, selection.reason) == (None, reason)
    assert store.fetched == []


def test_no_ready_lora():
    store = FakeStore({})
    training = store.candidate("l1", "flux", status="training")
    assert select_lora(ANNA, get_model("flux"), [training], store.inspect).reason == "no_ready_lora"
    assert select_lora(ANNA, get_model("flux"), [], store.inspect).reason == "no_ready_lora"


def test_ready_loras_only_for_other_families_are_a_base_model_mismatch():
    store = FakeStore({"l1": lora_bytes("flux")})
    selection = select_lora(ANNA, get_model("qwen-image"), [store.candidate("l1", "flux")], store.inspect)
    assert selection.reason == "base_model_mismatch"
    assert "flux" in selection.detail and "qwen-image" in selection.detail


def test_the_file_not_the_column_decides_the_base_model():
    # the row says z-image-turbo, the file is a Flux LoRA (even without metadata: its keys give it away)
    store = FakeStore({"l1": lora_bytes("flux", with_metadata=False)})
    selection = select_lora(ANNA, get_model("z-image-turbo"), [store.candidate("l1", "z-image-turbo")], store.inspect)
    assert selection.reason == "base_model_mismatch"
    assert "its file is for flux (from key_pattern)" in selection.detail


def test_checksum_mismatch_unreachable_and_invalid_files():
    good = lora_bytes("flux")
    store = FakeStore({"tampered": good, "broken": good[:-50]})
    flux = get_model("flux")
    tampered = store.candidate("tampered", "flux", sha256="0" * 64)
    assert select_lora(ANNA, flux, [tampered], store.inspect).reason == "checksum_mismatch"
    assert select_lora(ANNA, flux, [store.candidate("gone", "flux")], store.inspect).reason == "lora_file_unreachable"

    broken = store.candidate("broken", "flux")  # inspect raises InvalidLoraFileError: still a clean fallback
    selection = select_lora(ANNA, flux, [broken], store.inspect)
    assert selection.reason == "lora_file_invalid" and "past the end" in selection.detail


def test_a_broken_newest_lora_is_reported_not_replaced_by_an_older_one():
    store = FakeStore({"old": lora_bytes("flux")})
    candidates = [store.candidate("old", "flux", 1), store.candidate("newest", "flux", 2)]
    selection = select_lora(ANNA, get_model("flux"), candidates, store.inspect)
    assert (selection.lora, selection.reason) == (None, "lora_file_unreachable")
    assert store.fetched == ["newest"]


def test_trigger_word_falls_back_to_the_files_own():
    store = FakeStore({"l1": lora_bytes("qwen-image", trigger="qq_anna")})
    candidate = store.candidate("l1", "qwen-image", trigger_word=None)
    assert select_lora(ANNA, get_model("qwen-image"), [candidate], store.inspect).trigger_word == "qq_anna"


def test_reason_codes_are_stable():
    assert REASONS == ("character_not_found", "lora_disabled", "model_does_not_support_lora", "no_ready_lora",
                       "base_model_mismatch", "lora_file_unreachable", "checksum_mismatch", "lora_file_invalid",
                       "lora_identity_mismatch", "pinned_lora_unavailable")
    with pytest.raises(ValueError):
        InspectOutcome.failure("disk_on_fire")
    assert InspectOutcome.success("flux").ok and not InspectOutcome.failure("checksum_mismatch").ok


def test_a_callback_that_only_reports_the_base_model():
    """The I/O layer may check the checksum itself and hand back just the file's base model."""
    candidate = LoraCandidate(id="l1", base_model="flux", trigger_word="anna_person")
    used = select_lora(ANNA, get_model("flux"), [candidate], lambda c: InspectOutcome.success("flux"))
    assert (used.lora, used.trigger_word) == (candidate, "anna_person")
    skipped = select_lora(ANNA, get_model("flux"), [candidate], lambda c: InspectOutcome.success("qwen-image"))
    assert skipped.reason == "base_model_mismatch" and skipped.detail.endswith("its file is for qwen-image")


def test_ties_on_finished_at_go_to_the_higher_database_id():
    """Rows that became ready at the same moment (or never recorded when): the later row wins, 10 after 9."""
    flux = lora_bytes("flux")
    candidates = [LoraCandidate(id=i, base_model="flux", trigger_word="anna_person", finished_at=finished)
                  for finished in (None, T0) for i in (9, 10)]
    for same_time in (candidates[:2], candidates[2:]):
        selection = select_lora(ANNA, get_model("flux"), same_time,
                                lambda c: InspectOutcome.success(inspect_lora_bytes(flux)))
        assert selection.lora is not None and selection.lora.id == 10


def test_a_file_for_a_family_we_do_not_run_is_a_mismatch_naming_it():
    """A ready flux row whose file is really a FLUX.2 LoRA (ai-toolkit's layout, 6144 wide): never used."""
    flux2 = {f"diffusion_model.double_blocks.{i}.img_attn.qkv.lora_{ab}.weight": np.ones(shape, np.float16)
             for i in range(2) for ab, shape in (("A", (4, 6144)), ("B", (18432, 4)))}
    store = FakeStore({"l1": save(flux2, metadata={"ss_base_model_version": "flux2"})})

    selection = select_lora(ANNA, get_model("flux"), [store.candidate("l1", "flux")], store.inspect)

    assert (selection.lora, selection.reason) == (None, "base_model_mismatch")
    assert selection.detail == ("LoRA l1 is recorded as flux but its file is for FLUX.2 "
                                "(from ss_base_model_version 'flux2')")


def _owned(base_model: str, character_id: str | None, trigger: str, dataset_hash: str | None = None) -> bytes:
    tensors = {k: np.ones(s, np.float16) for k, s in lora_format.lora_tensor_shapes(base_model, 4).items()}
    return save(tensors, metadata=lora_format.trainer_metadata(base_model, trigger, rank=4, steps=10, trainer="t",
                                                               character_id=character_id, dataset_hash=dataset_hash))


@pytest.mark.parametrize(("file_character", "file_trigger", "file_dataset", "names"), [
    ("bob", "anna_person", None, "character bob"),
    ("anna", "bob_person", None, "'bob_person'"),
    ("anna", "anna_person", "b" * 64, "dataset bbbbbbbbbbbb"),
])
def test_a_file_naming_another_owner_is_refused(file_character, file_trigger, file_dataset, names):
    store = FakeStore({"l1": _owned("flux", file_character, file_trigger, file_dataset)})
    candidate = store.candidate("l1", "flux", character_id="anna", dataset_hash="a" * 64)
    selection = select_lora(ANNA, get_model("flux"), [candidate], store.inspect)
    assert (selection.lora, selection.reason) == (None, "lora_identity_mismatch")
    assert names in selection.detail and selection.candidate == candidate


def test_a_file_naming_its_own_owner_is_verified_and_one_naming_nobody_is_unverified():
    store = FakeStore({"own": _owned("flux", "anna", "anna_person", "a" * 64), "elsewhere": lora_bytes("flux")})
    own = select_lora(ANNA, get_model("flux"), [store.candidate("own", "flux", character_id="anna",
                                                                dataset_hash="a" * 64)], store.inspect)
    assert (own.reason, own.identity) == (None, "verified")
    foreign = select_lora(ANNA, get_model("flux"), [store.candidate("elsewhere", "flux", character_id="anna")],
                          store.inspect)
    assert (foreign.reason, foreign.identity, foreign.trigger_word) == (None, "unverified", "anna_person")
