"""README's Python blocks run as they stand, in order, in one namespace."""

import pathlib
import re
import warnings

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. perturb selecting no weight
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.accuracies.shape == (20,)
    assert namespace["logits"].shape == (64, 10)
