from pathlib import Path

from search.config import Config
from search.reference import END, START, block, replace_block, rows

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_matches_the_schema():
    text = README.read_text()
    assert block() in text, "README config reference drifted: python -m search.reference " \
                            "--write README.md"


def test_every_leaf_key_is_documented_with_its_default_and_bounds():
    table = {key: (typ, default, bounds, desc) for key, typ, default, bounds, desc in rows()}
    flat = Config().flat()
    assert set(table) == set(flat)
    assert all(desc for _, _, _, desc in table.values())
    assert table["search.population"][1:3] == ("16", "≥ 4")
    assert table["constraints.max_flops_ratio"][2] == "> 0, ≤ 1"
    assert table["genome.keep"][0] == "`select` \\| `fuse`"
    assert table["model.checkpoint"] == ("str \\| null", "null", "",
                                         "state dict to prune; null trains one")


def test_replace_block_keeps_the_text_around_it():
    doc = f"intro\n{START}\nstale\n{END}\noutro\n"
    assert replace_block(doc) == f"intro\n{block()}\noutro\n"
