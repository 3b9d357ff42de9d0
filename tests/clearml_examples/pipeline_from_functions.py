"""Mirrors ClearML's examples/pipeline/pipeline_from_functions.py (allegroai/clearml).

Differences from ClearML's file:

- this docstring and ``import os``;
- the dataset URL (the ``url`` parameter's default, step_one's fallback) is read from
  ``PIPEKIT_TEST_IRIS_URL``, a loopback server the test starts, instead of github.com;
- scikit-learn is not installed here: step_one does not import it, step_two defines
  ``train_test_split`` (sklearn's unstratified shuffle split, in NumPy) and step_three a
  NumPy ``NearestCentroid`` classifier in place of ``LogisticRegression``;
- ClearML's ``data_frame.columns += ['target']`` is commented out: it raises on pandas 3
  (four column names plus a list of one).
"""
import os

from clearml import PipelineController


# We will use the following function an independent pipeline component step
# notice all package imports inside the function will be automatically logged as
# required packages for the pipeline execution step
def step_one(pickle_data_url):
    # make sure we have scikit-learn for this step, we need it to use to unpickle the object
    # (ClearML imports sklearn here; this dataset's stand-in needs pandas only)
    import os
    import pickle
    import pandas as pd
    from clearml import StorageManager
    pickle_data_url = \
        pickle_data_url or \
        os.environ['PIPEKIT_TEST_IRIS_URL']
    local_iris_pkl = StorageManager.get_local_copy(remote_url=pickle_data_url)
    with open(local_iris_pkl, 'rb') as f:
        iris = pickle.load(f)
    data_frame = pd.DataFrame(iris['data'], columns=iris['feature_names'])
    # data_frame.columns += ['target']  (ClearML's line: raises on pandas 3)
    data_frame['target'] = iris['target']
    return data_frame


# We will use the following function an independent pipeline component step
# notice all package imports inside the function will be automatically logged as
# required packages for the pipeline execution step
def step_two(data_frame, test_size=0.2, random_state=42):
    # make sure we have pandas for this step, we need it to use the data_frame
    import pandas as pd  # noqa
    import numpy as np

    # stand-in for `from sklearn.model_selection import train_test_split`
    def train_test_split(*arrays, test_size=0.25, random_state=None):
        n = len(arrays[0])
        n_test = int(np.ceil(test_size * n))
        permutation = np.random.RandomState(random_state).permutation(n)
        test, train = permutation[:n_test], permutation[n_test:]
        return [part for a in arrays for part in (a.iloc[train], a.iloc[test])]

    y = data_frame['target']
    X = data_frame[(c for c in data_frame.columns if c != 'target')]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=random_state)

    return X_train, X_test, y_train, y_test


# We will use the following function an independent pipeline component step
# notice all package imports inside the function will be automatically logged as
# required packages for the pipeline execution step
def step_three(data):
    # make sure we have pandas for this step, we need it to use the data_frame
    import pandas as pd  # noqa
    import numpy as np

    # stand-in for `from sklearn.linear_model import LogisticRegression`
    class NearestCentroid:
        def fit(self, X, y):
            X, y = np.asarray(X, dtype=float), np.asarray(y)
            self.classes_ = np.unique(y)
            self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
            return self

        def predict(self, X):
            distances = ((np.asarray(X, dtype=float)[:, None, :] - self.centroids_) ** 2).sum(2)
            return self.classes_[distances.argmin(axis=1)]

    X_train, X_test, y_train, y_test = data
    # ClearML's: model = LogisticRegression(solver='liblinear', multi_class='auto')
    model = NearestCentroid()
    model.fit(X_train, y_train)
    return model


if __name__ == '__main__':

    # create the pipeline controller
    pipe = PipelineController(
        project='examples',
        name='Pipeline demo',
        version='1.1',
        add_pipeline_tags=False,
    )

    # set the default execution queue to be used (per step we can override the execution)
    pipe.set_default_execution_queue('default')

    # add pipeline components
    pipe.add_parameter(
        name='url',
        description='url to pickle file',
        default=os.environ['PIPEKIT_TEST_IRIS_URL']
    )
    pipe.add_function_step(
        name='step_one',
        function=step_one,
        function_kwargs=dict(pickle_data_url='${pipeline.url}'),
        function_return=['data_frame'],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        name='step_two',
        # parents=['step_one'],  # the pipeline will automatically detect the dependencies based on the kwargs inputs
        function=step_two,
        function_kwargs=dict(data_frame='${step_one.data_frame}'),
        function_return=['processed_data'],
        cache_executed_step=True,
    )
    pipe.add_function_step(
        name='step_three',
        # parents=['step_two'],  # the pipeline will automatically detect the dependencies based on the kwargs inputs
        function=step_three,
        function_kwargs=dict(data='${step_two.processed_data}'),
        function_return=['model'],
        cache_executed_step=True,
    )

    # For debugging purposes run on the pipeline on current machine
    # Use run_pipeline_steps_locally=True to further execute the pipeline component Tasks as subprocesses.
    # pipe.start_locally(run_pipeline_steps_locally=False)

    # Start the pipeline on the services queue (remote machine, default on the clearml-server)
    pipe.start()

    print('pipeline completed')
