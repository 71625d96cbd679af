"""Training on the simulated GPU service over HTTP: idempotent submit, progress, a real LoRA file, failures."""

from __future__ import annotations

import httpx
import pytest

from gpu_support import dataset_zip, trained_lora, training_spec, wait_done
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.base import TrainingBackend
from lora_pipelines.gpu.simulated import SimulatedTrainingBackend
from sim_gpu.files import faces_in_lora


@pytest.fixture()
def backend(sim):
    httpx.post(f"{sim.url}/_sim/faults", json={}).raise_for_status()
    yield SimulatedTrainingBackend(sim.url, timeout_s=10, attempts=4)
    httpx.post(f"{sim.url}/_sim/faults", json={}).raise_for_status()


@pytest.fixture(scope="module")
def small_dataset(sim, faces_dir):
    return dataset_zip(faces_dir, "katy_perry", sim.data_root, count=2)


def test_trained_file_is_a_flux_lora_carrying_the_faces(faces_dir):
    trained = trained_lora(faces_dir, "flux")

    inspection = inspect_lora_file(trained.path)
    assert inspection.base_model == "flux"
    assert inspection.trigger_word == "jnfrstn"
    assert inspection.rank == 16
    assert inspection.sha256 == trained.result.sha256
    assert inspection.metadata["backend"] == "simulated"
    assert inspection.metadata["software"] == "lora_pipelines-sim"
    assert trained.result.backend == "simulated"
    faces = faces_in_lora(trained.path.read_bytes())
    assert len(faces) == 5 and all(f.ndim == 3 and f.shape[2] == 3 and f.dtype.name == "uint8" for f in faces)


def test_same_idempotency_key_returns_the_same_call(backend, small_dataset):
    zip_path, sha, _ = small_dataset
    spec = training_spec(zip_path, sha, base_model="z-image-turbo", key="idem-key-0001", character_id="8")
    first = backend.submit_training(spec)
    second = backend.submit_training(spec)
    other = backend.submit_training(spec.model_copy(update={"idempotency_key": "idem-key-0002"}))

    assert first == second and first.startswith("fc-")
    assert other != first
    assert isinstance(backend, TrainingBackend)
    states = []
    while (poll := backend.poll(first)).state not in ("succeeded", "failed"):
        states.append((poll.state, poll.progress))
    assert poll.state == "succeeded", poll.error
    assert any(state == "running" and 0 < progress < 100 for state, progress in states)
    assert wait_done(backend, other).state == "succeeded"


def test_checksum_mismatch_fails_with_a_reason(backend, small_dataset):
    zip_path, _, _ = small_dataset
    call_id = backend.submit_training(training_spec(zip_path, "0" * 64, base_model="flux", key="bad-sha-0001"))
    poll = wait_done(backend, call_id)
    assert poll.state == "failed"
    assert "checksum mismatch" in poll.error


def test_file_url_outside_allowed_roots_is_refused(backend, small_dataset, tmp_path):
    outside = tmp_path / "elsewhere.zip"
    outside.write_bytes(small_dataset[0].read_bytes())
    call_id = backend.submit_training(training_spec(outside, small_dataset[1], base_model="flux", key="outside-0001"))
    poll = wait_done(backend, call_id)
    assert poll.state == "failed" and "outside the allowed roots" in poll.error


def test_lost_call_polls_as_lost(backend, sim, small_dataset):
    httpx.post(f"{sim.url}/_sim/faults", json={"endpoints": {"spawn": {"lost_call": True}}}).raise_for_status()
    call_id = backend.submit_training(training_spec(*small_dataset[:2], base_model="flux", key="lost-0001"))
    poll = wait_done(backend, call_id)
    assert poll.state == "lost"
    assert poll.call_id == call_id


def test_fail_training_fault_ends_failed(backend, sim, small_dataset):
    httpx.post(f"{sim.url}/_sim/faults",
               json={"endpoints": {"spawn": {"fail_training": "CUDA out of memory"}}}).raise_for_status()
    call_id = backend.submit_training(training_spec(*small_dataset[:2], base_model="flux", key="oom-0001"))
    poll = wait_done(backend, call_id)
    assert (poll.state, poll.error) == ("failed", "CUDA out of memory")


def test_cancel_stops_a_running_call(backend, small_dataset):
    call_id = backend.submit_training(training_spec(*small_dataset[:2], base_model="flux", key="cancel-0001"))
    backend.cancel(call_id)
    poll = wait_done(backend, call_id)
    assert (poll.state, poll.error) == ("failed", "cancelled")


def test_unknown_call_is_lost(backend):
    assert backend.poll("fc-doesnotexist").state == "lost"
