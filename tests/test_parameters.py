"""The chapters' papermill parameters: a scalar where a list is expected
becomes a list of one, anything else is one error naming the parameter."""
import pytest

from emkd_lib.parameters import (chapter_parameters, dataset_name, method_list, number, one_seed, profile_name,
                                 seed_list)


def test_scalars_become_lists_of_one():
    p = chapter_parameters(profile="smoke", datasets="beauty", seeds=3, device="cpu", train_missing=True)
    assert p.datasets == ("beauty",) and p.seeds == (3,)
    assert (p.profile, p.device, p.train_missing) == ("smoke", "cpu", True)
    assert chapter_parameters(datasets=["beauty", "toys"], seeds=(0, 1)).seeds == (0, 1)


@pytest.mark.parametrize("kwargs,message", [
    ({"profile": "gpu"}, "parameter 'profile' must be one of"),
    ({"datasets": [1]}, "parameter 'datasets' must hold dataset names, got 1"),
    ({"datasets": "beuaty"}, "parameter 'datasets': unknown dataset 'beuaty'; known datasets: beauty,"),
    ({"datasets": ["toys"], "allowed_datasets": ("beauty",)}, "this chapter runs on ['beauty'], not 'toys'"),
    ({"seeds": "zero"}, "parameter 'seeds' must hold non-negative ints below 2**32, got 'zero'"),
    ({"seeds": [0, -1]}, "parameter 'seeds' must hold non-negative ints below 2**32, got -1"),
    ({"seeds": [True]}, "parameter 'seeds' must hold non-negative ints below 2**32, got True"),
    ({"seeds": [2 ** 32]}, "parameter 'seeds' must hold non-negative ints below 2**32, got 4294967296"),
    ({"seeds": []}, "parameter 'seeds' is empty: give at least one value"),
    ({"datasets": []}, "parameter 'datasets' is empty: give at least one value"),
    ({"datasets": ".."}, "parameter 'datasets': unknown dataset '..'"),
    ({"device": "nosuch"}, "parameter 'device' must be auto, cpu, cuda, cuda:N or mps, got 'nosuch'"),
    ({"device": ""}, "parameter 'device' must be"),
    ({"seeds": 0.5}, "parameter 'seeds' must be a list (or one value), got float 0.5"),
    ({"device": 0}, "parameter 'device' must be"),
    ({"train_missing": "yes"}, "parameter 'train_missing' must be True or False, got 'yes'"),
])
def test_bad_parameters_are_one_error_naming_them(kwargs, message):
    with pytest.raises(ValueError) as error:
        chapter_parameters(**kwargs)
    assert message in str(error.value)


def test_seed_list_names_its_parameter():
    assert seed_list("spread_seeds", [0, 1, 2]) == (0, 1, 2)
    assert seed_list("spread_seeds", 2) == (2,)
    with pytest.raises(ValueError, match=r"parameter 'spread_seeds' must hold non-negative ints below 2\*\*32, got '1'"):
        seed_list("spread_seeds", ["1"])
    with pytest.raises(ValueError, match="parameter 'spread_seeds' is empty"):
        seed_list("spread_seeds", [])
    with pytest.raises(ValueError, match=r"parameter 'spread_seeds' must be a list \(or one value\), got dict"):
        seed_list("spread_seeds", {0: 1})


def test_the_other_parameters_are_checked_by_name():
    assert method_list("methods", "sasrec") == ("sasrec",)
    assert dataset_name("spread_dataset", "beauty") == "beauty"
    assert number("head_fraction", 0.2, 0, 1) == 0.2 and profile_name("reference_profile", "cpu") == "cpu"
    assert number("tolerance", 0, 0, 1) == 0.0 and one_seed("seed", 3) == 3
    for call, message in [
        (lambda: method_list("baselines", ["sasrec", "transformer"]), "parameter 'baselines': unknown method 'transformer'"),
        (lambda: method_list("methods", []), "parameter 'methods' is empty"),
        (lambda: dataset_name("spread_dataset", ["beauty"]), "parameter 'spread_dataset' must be one dataset name"),
        (lambda: dataset_name("dataset", "toys", allowed=("beauty",)), "this chapter runs on ['beauty'], not 'toys'"),
        (lambda: number("head_fraction", "0.2", 0, 1), "parameter 'head_fraction' must be a number in [0, 1], got '0.2'"),
        (lambda: number("tolerance", 2.0, 0, 1), "parameter 'tolerance' must be a number in [0, 1], got 2.0"),
        (lambda: profile_name("reference_profile", "gpu"), "parameter 'reference_profile' must be one of"),
        (lambda: number("head_fraction", 0, 0, 1, low_inclusive=False),
         "parameter 'head_fraction' must be a number in (0, 1], got 0"),
        (lambda: one_seed("seed", [0, 1]), "parameter 'seed' must be one seed (an int), got [0, 1]"),
        (lambda: one_seed("seed", -1), "parameter 'seed' must hold non-negative ints below 2**32, got -1"),
    ]:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value)


def test_a_name_the_parameters_cell_does_not_declare_is_an_error():
    """papermill only logs ``Passed unknown parameter`` and runs the defaults;
    the chapter refuses it, reading the cell papermill injected after the
    parameters cell from the kernel's input history."""
    from emkd_lib.parameters import unknown_parameters
    declared = 'profile = "cpu"  # smoke | cpu | paper\ndatasets = ["beauty", "toys"]\nseeds: list = [0]'
    injected = '# Parameters\ndataset = "beauty"\nprofile = "smoke"\n'
    assert unknown_parameters(["", declared, injected, "from x import y"]) == (
        ["dataset"], ["datasets", "profile", "seeds"])
    assert unknown_parameters(["", declared, '# Parameters\nprofile = "smoke"\n']) == (
        [], ["datasets", "profile", "seeds"])
    assert unknown_parameters(["", declared, "print(1)"]) == ([], [])   # nothing injected
    with pytest.raises(ValueError, match=r"^unknown parameter 'dataset': this chapter's parameters are "
                                         r"datasets, profile, seeds$"):
        chapter_parameters(history=["", declared, injected])
    assert chapter_parameters(history=["", declared, '# Parameters\nseeds = [1]\n']).profile == "cpu"


def test_only_papermills_cell_starts_with_its_header_in_every_chapter():
    """``unknown_parameters`` finds the injected cell by papermill's header: a
    chapter's own code cell starting with it would be taken for one."""
    import json
    from pathlib import Path
    from emkd_lib.parameters import INJECTED_HEADER, unknown_parameters
    for path in sorted(Path(__file__).resolve().parents[1].glob("notebooks/*.ipynb")):
        cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        headed = [c for c in cells if "".join(c["source"]).startswith(INJECTED_HEADER)]
        assert all("injected-parameters" in c["metadata"].get("tags", []) for c in headed), path.name
        assert unknown_parameters(["", *("".join(c["source"]) for c in cells)])[0] == [], path.name
    assert unknown_parameters(["", INJECTED_HEADER + "x = 1\n"]) == ([], [])   # run by hand, first
