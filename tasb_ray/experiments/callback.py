"""The Ray Tune callback that mirrors every trial into one MLflow run, from the driver.

It is pickled with the Tuner's state (so ``Tuner.restore`` brings it back); the tracker is made lazily
and dropped when pickled. A run is found again by its trial key, so a restored sweep keeps
logging into the same runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ray import tune

from tasb_ray.experiments.records import METRIC_PREFIXES, PLACEMENT_PREFIX, log_trial_artifacts
from tasb_ray.tracking import (
    FAILED,
    FINISHED,
    GROUP_TAG,
    KIND_TAG,
    RETRIES_TAG,
    RUNNING,
    SWEEP_TAG,
    TRIAL_TAG,
    TUNE_ID_TAG,
    Tracker,
    numeric_metrics,
)


class MlflowTrials(tune.Callback):
    """Args:
        tracking_uri, experiment_id: where the runs go (the experiment exists already).
        sweep: the sweep name (a tag on every run).
        trial_params: trial key -> flattened resolved training config, logged as params.
        trial_groups: trial key -> configuration group label.
        commit: the code's git commit.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, sweep: str, trial_params: Mapping[str, dict],
                 trial_groups: Mapping[str, str], commit: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.sweep = sweep
        self.trial_params = dict(trial_params)
        self.trial_groups = dict(trial_groups)
        self.commit = commit
        self.runs: dict[str, str] = {}
        self.logged: dict[str, set] = {}
        self._tracker: Tracker | None = None
        self._synced: set[str] = set()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tracker"] = None
        state["_synced"] = set()
        return state

    def __setstate__(self, state):
        self.__dict__.update({"_tracker": None, "_synced": set(), **state})

    def _sync_logged(self, key: str, run_id: str) -> None:
        """Once per driver process, what the run already holds counts as logged.

        A restored driver's copy of this callback is as old as the last experiment snapshot; the trials it
        resumes replay steps that MLflow may already have.
        """
        if key in self._synced:
            return
        self._synced.add(key)
        self.logged.setdefault(key, set()).update(self.tracker.logged_steps(run_id))

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.tracking_uri)
        return self._tracker

    @staticmethod
    def _key(trial) -> str:
        return trial.config["trial"]["key"]

    def _run_id(self, trial) -> str:
        key = self._key(trial)
        if key in self.runs:
            self._sync_logged(key, self.runs[key])
            return self.runs[key]
        found = self.tracker.find_run(self.experiment_id, TRIAL_TAG, key)
        if found is not None:
            run_id = found.run_id
            if found.status != RUNNING:
                self.tracker.set_status(run_id, RUNNING)
            self._sync_logged(key, run_id)
        else:
            run_id = self.tracker.create_run(self.experiment_id, key, tags={
                KIND_TAG: "trial", GROUP_TAG: self.trial_groups[key], TRIAL_TAG: key, SWEEP_TAG: self.sweep,
                TUNE_ID_TAG: trial.trial_id})
            self.tracker.log_params(run_id, {**self.trial_params[key], "git_commit": self.commit})
            self._synced.add(key)
        self.runs[key] = run_id
        self.logged.setdefault(key, set())
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = self._key(trial)
        run_id = self._run_id(trial)
        step = int(result.get("step", 0))
        # A trial resumed from a checkpoint replays the steps after it; each (metric, step) is logged once.
        fresh = {k: v for k, v in numeric_metrics(result, METRIC_PREFIXES).items()
                 if (k, step) not in self.logged[key]}
        if fresh:
            self.tracker.log_metrics(run_id, fresh, step)
            self.logged[key].update((k, step) for k in fresh)
        if result.get("event") == "final":
            # Where the trial ran (device, GPU ids, CUDA_VISIBLE_DEVICES): tags, since a resumed trial may move.
            for k, v in result.items():
                if k.startswith(PLACEMENT_PREFIX) and not k.endswith("_at"):
                    self.tracker.set_tag(run_id, k.replace("/", "."), str(v))
        if result.get("plan_hash") and ("plan_hash", None) not in self.logged[key]:
            if "plan_hash" not in self.tracker.run(run_id).params:
                self.tracker.log_params(run_id, {"plan_hash": result["plan_hash"]})
            self.logged[key].add(("plan_hash", None))

    def on_trial_recover(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        tags = self.tracker.run(run_id).tags
        self.tracker.set_tag(run_id, RETRIES_TAG, str(int(tags.get(RETRIES_TAG, "0")) + 1))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        ckpt = trial.checkpoint
        if ckpt is not None:
            with ckpt.as_directory() as d:
                log_trial_artifacts(self.tracker, run_id, Path(d))
        self.tracker.finish(run_id, FINISHED)

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        error = trial.error_file
        if error and Path(error).is_file():
            self.tracker.log_artifact(run_id, error, "error")
        self.tracker.finish(run_id, FAILED)
