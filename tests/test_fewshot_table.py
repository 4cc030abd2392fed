"""The few-shot benchmark's table pairs each recipe with the first one over the runs
both have, so a recipe run on part of the suite is not compared with the whole."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fewshot.py"
spec = importlib.util.spec_from_file_location("fewshot_bench", SCRIPT)
fewshot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fewshot)


def run(recipe, scene, psnr, ssim=0.9, lpips=0.1):
    return {"recipe": recipe, "scene": scene, "views": 3, "seed": 0, "psnr": psnr, "ssim": ssim, "lpips": lpips,
            "train_seconds": 10.0}


def test_differences_are_paired_over_the_runs_both_recipes_have():
    results = [run("base", "easy", 30.0), run("base", "hard", 18.0, 0.8, 0.3),
               run("new", "hard", 19.0, 0.85, 0.2)]  # the new recipe ran on the hard scene only
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in fewshot.table(results, ["base", "new"], [3])
            .splitlines()[2:]}
    assert rows["new"][2] == "19.00 ± 0.00"  # its own mean, over its one run
    assert rows["new"][3] == "+1.00 ± 0.00 (better on 1 of 1)"  # not 19 - 24 = -5
    assert rows["new"][6] == "+0.050, -0.100"
    assert rows["base"][3] == "" and rows["base"][6] == ""
