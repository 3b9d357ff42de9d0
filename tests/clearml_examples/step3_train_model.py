"""Mirrors ClearML's examples/pipeline/step3_train_model.py (allegroai/clearml).

Differences from ClearML's file: this docstring, and stand-ins for two libraries not installed
here: a NumPy ``NearestCentroid`` classifier (fit / predict / score) in place of scikit-learn's
``LogisticRegression``, and ``joblib.dump`` / ``joblib.load`` as plain pickle files.
matplotlib is used as in ClearML's file (``plt.show()`` on a headless backend draws nothing).
"""
import pickle
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np

from clearml import Task


# stand-in for `import joblib`: dump / load a pickle file
def _dump(value, filename, compress=False):
    with open(filename, 'wb') as f:
        pickle.dump(value, f)


def _load(filename):
    with open(filename, 'rb') as f:
        return pickle.load(f)


joblib = SimpleNamespace(dump=_dump, load=_load)


# stand-in for `from sklearn.linear_model import LogisticRegression`: a nearest-centroid classifier
class NearestCentroid:
    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict(self, X):
        distances = ((np.asarray(X, dtype=float)[:, None, :] - self.centroids_) ** 2).sum(axis=2)
        return self.classes_[distances.argmin(axis=1)]

    def score(self, X, y):
        return float(np.mean(self.predict(X) == np.asarray(y)))


# Connecting ClearML with the current process,
# from here on everything is logged automatically
task = Task.init(project_name="examples", task_name="Pipeline step 3 train model")

# Arguments
args = {
    'dataset_task_id': 'REPLACE_WITH_DATASET_TASK_ID',
}
task.connect(args)

# only create the task, we will actually execute it later
task.execute_remotely()

print('Retrieving Iris dataset')
dataset_task = Task.get_task(task_id=args['dataset_task_id'])
X_train = dataset_task.artifacts['X_train'].get()
X_test = dataset_task.artifacts['X_test'].get()
y_train = dataset_task.artifacts['y_train'].get()
y_test = dataset_task.artifacts['y_test'].get()
print('Iris dataset loaded')

# ClearML's: model = LogisticRegression(solver='liblinear', multi_class='auto')
model = NearestCentroid()
model.fit(X_train, y_train)

joblib.dump(model, 'model.pkl', compress=True)

loaded_model = joblib.load('model.pkl')
result = loaded_model.score(X_test, y_test)

print('model trained & stored')

x_min, x_max = X_test[:, 0].min() - .5, X_test[:, 0].max() + .5
y_min, y_max = X_test[:, 1].min() - .5, X_test[:, 1].max() + .5
h = .02  # step size in the mesh
xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
plt.figure(1, figsize=(4, 3))

plt.scatter(X_test[:, 0], X_test[:, 1], c=y_test, edgecolors='k', cmap=plt.cm.Paired)
plt.xlabel('Sepal length')
plt.ylabel('Sepal width')

plt.xlim(xx.min(), xx.max())
plt.ylim(yy.min(), yy.max())
plt.xticks(())
plt.yticks(())

plt.title('Iris Types')
plt.show()

print('Done')
