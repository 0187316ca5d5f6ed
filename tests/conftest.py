import pytest
import torch

# The tests use tiny tensors, where a second thread only adds synchronisation;
# on a machine that is busy with a training campaign, two threads per test
# process made the learning tests dozens of times slower.
torch.set_num_threads(1)


@pytest.fixture
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMKD_REQUIRE_CACHED", "1")   # nothing may train or evaluate
