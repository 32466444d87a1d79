"""MLflow layout of design §4, written with `MlflowClient` (no global active run).

Tracking must never stop a search: a failed call leaves the candidate unsent in the
run folder's ledger, and `flush` re-sends it later (next generation, end of search,
`blendprune resume`). Re-sending first looks for a child run already tagged with the
candidate's index, so nothing is recorded twice.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .redaction import redact

__all__ = ["TrackingUnavailable", "Tracker", "check_tracking", "client", "download"]

ROLE = "blendprune.role"
INDEX = "blendprune.index"
GENERATION = "blendprune.generation"
SEED = "blendprune.seed"
ON_FRONT = "blendprune.on_front"
FRONT_RANK = "blendprune.front_rank"
FINAL_RANK = "blendprune.final_rank"
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the description the UI shows for a run or experiment
KIND = "mlflow.experimentKind"
EXPERIMENT_NOTE = """blendprune searches: each parent run is one search, its children the
candidates (pruned, BN re-estimated, briefly fine-tuned, scored on the holdout).

- Children on the Pareto front carry the tag `blendprune.on_front = true` and the metric
  `on_front = 1`; `blendprune.final_rank` marks the ones the final stage fine-tuned and
  tested. Filter: `tags.blendprune.on_front = 'true'`, sort by `accuracy`.
- The parent's description holds the front, the base model's accuracy and how to load the
  chosen model; its `pareto/front.png` draws the front.
"""


class TrackingUnavailable(RuntimeError):
    """The tracking URI cannot be reached."""


def client(uri: str | None) -> Any:
    """An MlflowClient for `uri`, with MLflow set up the way a search needs it: a stalled
    server must not stall the search (few retries, short timeouts), and MLflow's own
    per-run links (credentials included) are not printed; blendprune prints its own."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def download(uri: str | None, run_id: str, artifact: str) -> Path:
    """A run's artifact (file or folder) downloaded to a local temporary path."""
    return Path(client(uri).download_artifacts(run_id, artifact))


def check_tracking(uri: str | None) -> None:
    """Fail fast (exit 1, before any compute) when the tracking store is unreachable."""
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingUnavailable(f"tracking.uri: cannot reach {uri or 'the default store'}: "
                                  f"{first[:200]}") from None


class Tracker:
    """Parent run of one search and its children; every call tolerates a dead server."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        self.uri, self.experiment = uri, experiment
        self.client = client(uri)
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.warned = False
        self.down = False  # the last call failed: queued sends wait for the next flush

    def start(self, name: str, params: dict[str, str], config_yaml: str,
              tags: dict[str, str] | None = None) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = (exp.experiment_id if exp is not None
                              else self.client.create_experiment(self.experiment))
        if exp is None or NOTE not in exp.tags:  # the UI opens on the runs, described
            self.client.set_experiment_tag(self.experiment_id, KIND, "custom_model_development")
            self.client.set_experiment_tag(self.experiment_id, NOTE, EXPERIMENT_NOTE)
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE: "search", **(tags or {})})
        self.parent_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, redact(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i:i + 100])
        self.client.log_text(self.parent_id, redact(config_yaml), "config.yaml")
        return self.parent_id

    def has_run(self, run_id: str) -> bool:
        """Whether this tracking store holds `run_id`."""
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False

    def attach(self, parent_id: str) -> None:
        run = self.client.get_run(parent_id)
        self.parent_id, self.experiment_id = parent_id, run.info.experiment_id
        if run.info.status != "RUNNING":
            self.client.update_run(parent_id, status="RUNNING")

    def _warn(self, what: str, exc: Exception) -> None:
        self.down = True
        if not self.warned:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            print(redact(f"warning: tracking server unavailable ({what}: {reason}); "
                         "results are kept in the run folder and re-sent later"), flush=True)
            self.warned = True

    def _existing_child(self, index: int) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_id}' and tags.`{INDEX}` = '{index}'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def candidate(self, record: dict[str, Any], *, look_first: bool = False) -> str | None:
        """Log one candidate as a nested child run; its run id, or None if the server failed."""
        from mlflow.entities import Metric, Param

        try:
            res = record["result"]
            seconds = float(res["timings"].get("total", 0.0))
            started = res.get("started_at") or time.time() - seconds
            start_ms, end_ms = int(started * 1000), int((started + seconds) * 1000)
            run_id = self._existing_child(record["index"]) if look_first else None
            if run_id is None:
                # the name says what a reviewer looks for first, without picking columns
                name = (f"#{record['index']:04d} acc {res['accuracy']:.4f} FLOPs "
                        f"{res['flops_ratio']:.1%}" if res["status"] == "ok"
                        else f"#{record['index']:04d} failed")
                run_id = self.client.create_run(
                    self.experiment_id, run_name=name,
                    start_time=start_ms,
                    tags={ROLE: "candidate", PARENT: self.parent_id,
                          INDEX: str(record["index"]), GENERATION: str(record["generation"]),
                          SEED: str(record.get("seed") or ""),
                          "blendprune.status": res["status"]}).info.run_id
            now = end_ms
            metrics = [Metric(k, float(res[src]), now, 0) for k, src in (
                ("accuracy", "accuracy"), ("flops", "flops"), ("param_count", "params"),
                ("flops_ratio", "flops_ratio"), ("params_ratio", "params_ratio"))]
            metrics.append(Metric("eval_seconds", float(res["timings"].get("total", 0.0)),
                                  now, 0))
            for key in ("latency", "bn_accuracy"):
                if res.get(key) is not None:
                    metrics.append(Metric(key, float(res[key]), now, 0))
            for key, v in res["timings"].items():
                metrics.append(Metric(f"seconds_{key}", float(v), now, 0))
            params = [Param("generation", str(record["generation"])),
                      Param("seed", str(record.get("seed") or ""))]
            if res["status"] != "ok":
                params.append(Param("failure", res["reason"][:500]))
            self.client.log_batch(run_id, metrics=metrics, params=params)
            self.client.log_dict(run_id, {"index": record["index"], "genome": record["genome"],
                                          "plan": res["plan"], "result": {
                                              k: v for k, v in res.items() if k != "plan"}},
                                 "candidate.json")
            self.client.set_terminated(run_id, "FINISHED" if res["status"] == "ok" else "FAILED",
                                       end_time=end_ms)
            self.down = False
            return run_id
        except Exception as exc:
            self._warn(f"candidate {record['index']}", exc)
            return None

    def send_missing(self, records: list[dict[str, Any]],
                     save: Callable[[dict[str, Any]], None]) -> int:
        """Send the candidates the server missed (`run_id` None), without duplicating any it
        already has; `save(record)` persists each newly sent one. Stops at the first
        failure (the server is still away). Returns how many remain unsent."""
        for record in list(records):
            if record["run_id"] is None:
                record["run_id"] = self.candidate(record, look_first=True)
                if record["run_id"] is None:
                    break
                save(record)
        return sum(r["run_id"] is None for r in records)

    def review(self, records: list[dict[str, Any]], rows: list[dict[str, Any]],
               finals: list[dict[str, Any]], description: str) -> None:
        """What a reviewer filters and colours by: every child tagged with whether it is
        on the front, its rank there and in the final stage (and an `on_front` metric);
        the parent described in markdown."""
        from mlflow.entities import Metric, RunTag

        front = {r["index"]: k for k, r in enumerate(sorted(rows, key=lambda r: -r["accuracy"]))}
        final = {f["index"]: f["rank"] for f in finals}
        try:
            now = int(time.time() * 1000)
            for rec in records:
                if rec.get("run_id") is None:
                    continue
                i = rec["index"]
                tags = [RunTag(ON_FRONT, str(i in front).lower()),
                        RunTag(FRONT_RANK, str(front.get(i, ""))),
                        RunTag(FINAL_RANK, str(final.get(i, "")))]
                self.client.log_batch(rec["run_id"], tags=tags,
                                      metrics=[Metric("on_front", float(i in front), now, 0)])
            self.client.set_tag(self.parent_id, NOTE, description)
        except Exception as exc:
            self._warn("review tags", exc)

    def log_model(self, model: Any, example: Any, *, rank: int, index: int,
                  registered: str | None) -> str | None:
        """A final-stage model logged the MLflow way, in its own child run `final-<rank>`:
        the pytorch flavour with a signature and an input example, registered as a new
        version of `registered` (if given). Its model URI, or None if the server failed."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        try:
            if self.uri:
                mlflow.set_tracking_uri(self.uri)
            x = example[:1].detach().cpu().contiguous()
            model = model.cpu().eval().to(memory_format=torch.contiguous_format)
            with torch.no_grad():
                y = model(x).numpy()
            with mlflow.start_run(experiment_id=self.experiment_id, run_name=f"final-{rank}",
                                  parent_run_id=self.parent_id,
                                  tags={ROLE: "final", INDEX: str(index),
                                        FINAL_RANK: str(rank)}):
                info = mlflow.pytorch.log_model(
                    model, name="model", signature=infer_signature(x.numpy(), y),
                    input_example=x.numpy(), registered_model_name=registered,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                    serialization_format="pickle", await_registration_for=60)
            return str(info.model_uri)
        except Exception as exc:
            self._warn(f"final model {rank}", exc)
            return None

    def generation(self, generation: int, metrics: dict[str, float]) -> bool:
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[
                Metric(k, float(v), now, generation) for k, v in metrics.items()])
            return True
        except Exception as exc:
            self._warn("generation metrics", exc)
            return False

    def front(self, rows: list[dict[str, Any]], plot: Path) -> bool:
        try:
            self.client.log_dict(self.parent_id, {"front": rows}, "pareto/front.json")
            buf = io.StringIO()
            keys = [k for k in rows[0] if k != "genome"] if rows else ["index"]
            w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
            self.client.log_text(self.parent_id, buf.getvalue(), "pareto/front.csv")
            self.client.log_artifact(self.parent_id, str(plot), "pareto")
            return True
        except Exception as exc:
            self._warn("front", exc)
            return False

    def artifacts(self, files: dict[str, Path]) -> None:
        """Log local files under artifact folders (folder -> file)."""
        for folder, path in files.items():
            try:
                self.client.log_artifact(self.parent_id, str(path), folder)
            except Exception as exc:
                self._warn(f"artifact {path.name}", exc)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        try:
            self.client.log_dict(self.parent_id, data, name)
        except Exception as exc:
            self._warn(name, exc)

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, step)
                                                           for k, v in values.items()])
        except Exception as exc:
            self._warn("metrics", exc)

    def finish(self, status: str = "FINISHED") -> None:
        try:
            self.client.set_terminated(self.parent_id, status)
        except Exception as exc:
            self._warn("finish", exc)
