"""In the image of ClearML's examples/pipeline/pipeline_from_functions.py, unmodified: it
imports clearml, sets a default execution queue and calls pipe.start() (remote mode)."""

from clearml import PipelineController


def step_one(rows):
    return [[i, i * i] for i in range(rows)]


def step_two(data_frame, test_size=0.25):
    cut = int(len(data_frame) * (1 - test_size))
    return data_frame[:cut], data_frame[cut:]


def step_three(data):
    train, test = data
    return {"trained_on": len(train), "tested_on": len(test)}


if __name__ == '__main__':
    pipe = PipelineController(project='examples', name='Pipeline demo', version='1.1',
                              add_pipeline_tags=False)
    pipe.set_default_execution_queue('default')
    pipe.add_parameter(name='rows', description='how many rows', default=8)
    pipe.add_function_step(name='step_one', function=step_one,
                           function_kwargs=dict(rows='${pipeline.rows}'),
                           function_return=['data_frame'], cache_executed_step=True)
    pipe.add_function_step(name='step_two', function=step_two,
                           function_kwargs=dict(data_frame='${step_one.data_frame}'),
                           function_return=['processed_data'], cache_executed_step=True)
    pipe.add_function_step(name='step_three', function=step_three,
                           function_kwargs=dict(data='${step_two.processed_data}'),
                           function_return=['model'], cache_executed_step=True)
    pipe.start()
    print('pipeline completed')
