"""ClearML's ``clearml.automation.controller`` import path (``PipelineDecorator`` lives there
in ClearML's own examples).
"""

from ..controller import PipelineController
from ..decorator import PipelineDecorator

__all__ = ["PipelineController", "PipelineDecorator"]
