import pytest

from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.errors import DefinitionError


def f():
    return 1


def test_add_function_step_checks_monitor_specs():
    pipe = PipelineController("p", "monitor-tests")
    with pytest.raises(DefinitionError, match="step 'train': monitor_metrics"):
        pipe.add_function_step("train", f, monitor_metrics=["loss"])
    with pytest.raises(DefinitionError, match="monitor_artifacts must be a list"):
        pipe.add_function_step("train", f, monitor_artifacts="data")
    assert "train" not in pipe.get_pipeline_dag()


def test_add_step_checks_monitor_specs():
    template = Task.create(project_name="monitor-tests", task_name="template", script=__file__)
    pipe = PipelineController("p", "monitor-tests")
    with pytest.raises(DefinitionError, match="step 's': monitor_models"):
        pipe.add_step("s", base_task_id=template.id, monitor_models=["*", "x"])


def test_component_checks_monitor_specs_when_decorated():
    with pytest.raises(DefinitionError, match="step 'named'"):
        PipelineDecorator.component(name="named", monitor_models=["a*"])(f)
    with pytest.raises(DefinitionError, match="step 'f'"):
        PipelineDecorator.component(monitor_metrics=[("a",)])(f)
