"""Progress: a bar on a terminal, one plain line per finished candidate elsewhere."""

import io

from search.progress import Progress

OK = {"status": "ok", "accuracy": 0.9, "flops_ratio": 0.5}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_count_up_and_track_the_best_and_the_failures():
    out = io.StringIO()
    p = Progress(4, done=1, stream=out)  # a resumed search: one already done
    p.update(4, {**OK, "accuracy": 0.91}, feasible=True)
    p.update(5, {**OK, "accuracy": 0.95}, feasible=False)  # over the budget: not the best
    p.update(6, {"status": "failed", "accuracy": 0.0, "flops_ratio": 0.4}, feasible=True)
    lines = out.getvalue().splitlines()
    assert [ln.split("]")[0] for ln in lines] == ["[2/4", "[3/4", "[4/4"]
    assert "candidate 6: failed" in lines[2] and "best within budget 0.9100" in lines[2]
    assert "failed 1" in lines[2] and "eta" in lines[0]


def test_a_terminal_gets_a_bar_and_messages_above_it():
    out = Terminal()
    p = Progress(2, stream=out)
    p.update(0, OK, feasible=True)
    p.write("gen   0  evaluated 1/2")
    p.update(1, OK, feasible=True)
    p.close()
    text = out.getvalue()
    assert "2/2" in text and "best 0.9000" in text and "gen   0  evaluated 1/2\n" in text
    assert "candidate 0:" not in text  # no plain lines under a bar
