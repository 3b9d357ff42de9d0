"""The pipeline the browser tests (tests/test_ui_browser.py) look at: four function steps.

``prepare`` prints log lines and is cached (it depends only on ``rows``), ``train`` reports a
``loss`` scalar over ``epochs`` iterations, ``evaluate`` and ``report`` follow. Parameters:
``rows`` (int), ``lr`` (float), ``epochs`` (int), ``note`` (str).
"""

from pipekit import PipelineController


def prepare(rows):
    for i in range(rows):
        print(f"prepare: row {i} of {rows}")
    print("prepare: done")
    return [float(i) for i in range(rows)]


def train(data, lr, epochs):
    from pipekit import Logger

    logger = Logger.current_logger()
    loss = 1.0
    for epoch in range(epochs):
        loss = loss * (1.0 - lr / 2)
        logger.report_scalar("loss", "train", loss, iteration=epoch)
        logger.report_scalar("loss", "validation", loss * 1.1, iteration=epoch)
        print(f"train: epoch {epoch} loss={loss:.4f}")
    return {"weights": [x * lr for x in data], "loss": loss}


def evaluate(model, data):
    return round(model["loss"] * len(data), 6)


def report(score, note):
    print(f"report: {note} score={score}")
    return f"{note}: {score}"


if __name__ == "__main__":
    pipe = PipelineController(name="ui-train", project="ui-tests", version="1.0.0")
    pipe.add_parameter("rows", 4, description="how many rows prepare makes")
    pipe.add_parameter("lr", 0.1, description="learning rate")
    pipe.add_parameter("epochs", 5)
    pipe.add_parameter("note", "baseline")
    pipe.add_function_step("prepare", prepare, {"rows": "${pipeline.rows}"}, ["data"],
                           cache_executed_step=True)
    pipe.add_function_step("train", train, {"data": "${prepare.data}", "lr": "${pipeline.lr}",
                                            "epochs": "${pipeline.epochs}"}, ["model"])
    pipe.add_function_step("evaluate", evaluate, {"model": "${train.model}",
                                                  "data": "${prepare.data}"}, ["score"])
    pipe.add_function_step("report", report, {"score": "${evaluate.score}",
                                              "note": "${pipeline.note}"}, ["summary"])
    pipe.start_locally(run_pipeline_steps_locally=True)
