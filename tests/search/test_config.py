import pytest

from search.config import Config, ConfigError, list_presets, load_config


def test_defaults_match_the_design_contract():
    cfg = Config()
    assert cfg.model.arch == "resnet20" and cfg.data.dataset == "digits"
    assert cfg.search.algorithm == "optuna-tpe" and cfg.search.budget == 64
    assert cfg.objectives == ["accuracy", "flops"] and cfg.constraints.max_flops_ratio == 1.0
    assert "taylor" in cfg.criteria.pool and "random" not in cfg.criteria.pool
    assert cfg.final.distill == 0.5 and cfg.evaluation.distill == 0.0


def test_set_overrides_parse_types(tmp_path):
    cfg = load_config(None, ["search.population=6", "genome.granularity=stage",
                             "criteria.pool=[l1, fpgm]", "model.checkpoint="])
    assert cfg.search.population == 6 and cfg.genome.granularity == "stage"
    assert cfg.criteria.pool == ["l1", "fpgm"] and cfg.model.checkpoint is None


@pytest.mark.parametrize("overrides,message", [
    (["search.popsize=8"], "search.popsize: unknown key"),
    (["model.arch=resnet21"], None),  # arch is checked when the model is built
    (["criteria.pool=[l1, l3]"], "criteria.pool: unknown criterion 'l3'"),
    (["genome.max_ratio=1.2"], "genome.max_ratio: Input should be less than 1 (got 1.2)"),
    (["search.population=3"], "search.population: Input should be greater than or equal to 4"),
    (["search.population=abc"], "search.population: Input should be a valid integer"),
    (["search.workers=-1"], "search.workers: Input should be greater than or equal to 1"),
    (["objectives=[flops]"], "objectives: must start with 'accuracy'"),
    (["search.algorithm=cmaes"], "search.algorithm: unknown algorithm 'cmaes'; known: "
                                 "deap-nsga2, deap-steady, optuna-nsga2, optuna-tpe, random"),
    (["data.dataset=imagenet"], "data.dataset: unknown dataset 'imagenet'; known: cifar10,"),
    (["search.algorithm=tests.search.test_strategies:Nope"],
     "search.algorithm: cannot import 'tests.search.test_strategies:Nope'"),
    (["search.algorithm=tests.search.test_strategies:toy_result"],
     "search.algorithm: 'tests.search.test_strategies:toy_result' is not a Strategy subclass"),
    (["searchpopulation"], "--set: expected key=value"),
])
def test_bad_values_name_the_key(overrides, message):
    if message is None:
        assert load_config(None, overrides).model.arch == "resnet21"
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {population: 8\nmodel: [")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML at line"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config: file not found"):
        load_config(str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="preset: unknown preset 'cifar11'"):
        load_config("cifar11")


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates(name):
    cfg = load_config(name)
    assert cfg.search.budget >= 16


def test_flat_params_use_dotted_keys():
    flat = Config().flat()
    assert flat["search.population"] == "16" and flat["criteria.pool"].startswith("l1,l2")
