"""The chapters' papermill parameters: a scalar where a list is expected
becomes a list of one, anything else is one error naming the parameter."""
import pytest

from emkd_lib.parameters import chapter_parameters, seed_list


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
    ({"seeds": "zero"}, "parameter 'seeds' must hold non-negative ints, got 'zero'"),
    ({"seeds": [0, -1]}, "parameter 'seeds' must hold non-negative ints, got -1"),
    ({"seeds": [True]}, "parameter 'seeds' must hold non-negative ints, got True"),
    ({"seeds": 0.5}, "parameter 'seeds' must be a list (or one value), got float 0.5"),
    ({"device": 0}, "parameter 'device' must be a string"),
    ({"train_missing": "yes"}, "parameter 'train_missing' must be True or False, got 'yes'"),
])
def test_bad_parameters_are_one_error_naming_them(kwargs, message):
    with pytest.raises(ValueError) as error:
        chapter_parameters(**kwargs)
    assert message in str(error.value)


def test_seed_list_names_its_parameter():
    assert seed_list("spread_seeds", [0, 1, 2]) == (0, 1, 2)
    assert seed_list("spread_seeds", 2) == (2,)
    with pytest.raises(ValueError, match="parameter 'spread_seeds' must hold non-negative ints, got '1'"):
        seed_list("spread_seeds", ["1"])
    with pytest.raises(ValueError, match=r"parameter 'spread_seeds' must be a list \(or one value\), got dict"):
        seed_list("spread_seeds", {0: 1})
