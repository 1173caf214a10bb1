"""The terminal renderer's building blocks: the live progress bar and one number format per column."""

import io

from rich.console import Console

from flopbench.output import text


class Clock:
    """A clock a test moves by hand (seconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bar_line(progress: text.Progress, width: int) -> str:
    """The live bar as the terminal shows it now, as plain text."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(progress._bar.get_renderable())
    return console.file.getvalue().rstrip("\n")


def test_the_bar_keeps_its_elapsed_time_and_eta_at_100_columns():
    clock = Clock()
    progress = text.Progress(io.StringIO(), 100, live=True, clock=clock)
    progress.start("sweep demo", 1000, steps=False)
    long = "sweep demo: llama3-8b T=4096 B=8 bf16 ckpt=full: train_step/full step 7/13, a long description"
    clock.now = 100.0
    progress.update(240, long)
    clock.now = 125.0
    progress.update(300, long)
    line = bar_line(progress, 100)
    progress.close()
    # 60 units in the last 25 s = 2.4 per s: 700 left take 291.7 s, shown rounded up as 0:04:52
    assert len(line) <= 100 and line.endswith(" 30% 0:02:05 ETA 0:04:52"), line
    assert "…" in line and line.startswith("sweep demo: llama3-8b")  # the description gave way, cut with "…"
    filled = line.split("…")[1].split()[0]  # 30% of a bar at its widest: 9 of 30 cells
    assert len(filled) == 0.3 * text.BAR_MAX_WIDTH, line


def test_a_narrow_terminal_drops_the_bar_before_the_times():
    clock = Clock()
    progress = text.Progress(io.StringIO(), text.MIN_WIDTH, live=True, clock=clock)
    progress.start("run forward (checkpointing none): timed 3/10", 13)
    clock.now = 61.0
    progress.update(1)
    clock.now = 65.0
    progress.update(3)
    line = bar_line(progress, text.MIN_WIDTH)
    progress.close()
    assert len(line) <= text.MIN_WIDTH and line.endswith(" 3/13 0:01:05 ETA 0:00:20"), line  # 10 left at 0.5/s


def test_a_column_keeps_one_number_of_decimals():
    # the largest value gets 3 significant digits; every other value the same decimals
    assert text.fixed_column([0.01, 0.019, 0.0367]) == ["0.0100", "0.0190", "0.0367"]
    assert text.fixed_column([57.3, 529.4, None, 0.0]) == ["57", "529", "-", "0"]
    assert text.fixed_column([0.00161, 0.000526]) == ["0.00161", "0.00053"]
    assert text.fixed_column([12765.4, 3894.2]) == ["12,765", "3,894"]
    assert text.fixed_column([None, None]) == ["-", "-"]
