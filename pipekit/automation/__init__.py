"""ClearML's ``clearml.automation`` import path, so ``from clearml.automation import
PipelineController`` only needs ``clearml`` changed to ``pipekit``.
"""

from ..controller import PipelineController
from ..decorator import PipelineDecorator

__all__ = ["PipelineController", "PipelineDecorator"]
