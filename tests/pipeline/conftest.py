import pytest

import tfkd


@pytest.fixture
def packed_outputs(monkeypatch):
    """The cached teacher outputs each stage packs for its Distiller
    (`tfkd.distill.with_teacher_outputs`), in the order the stages run."""
    packed = []
    original = tfkd.distill.with_teacher_outputs

    def spy(x, outputs):
        packed.append(outputs["output"])
        return original(x, outputs)

    monkeypatch.setattr(tfkd.distill, "with_teacher_outputs", spy)
    return packed
