"""The files of a run's folder (`$DIMALIGN_HOME/runs/<run id>/`), named in one place: the
runner writes them, the worker and the Ray head move them, export copies them and the pages
read them. Each is written atomically with its sha256 beside it (`checked`)."""

RESULT = "result.json"  # the run's metrics, config and timings (runner.save_result)
GEOMETRY = "geometry.pt"  # the three models' features and their spectra and angles
TELEMETRY = "telemetry.json"  # the live probe's points (DA, angles, accuracies per step)
WEIGHTS = "unlearned.pt"  # the unlearned model's state dict
CHECKPOINT = "checkpoint.pt"  # a running job's resumable state, written after every epoch
FILM = "film.pt"  # an unlearning run's recorded frames (dimalign/methods/film.py)
FILM_PENDING = "film-kept.pt"  # frames still to measure, until the run's film job is done
FILM_UMAP = "film-umap.pt"  # the film in aligned UMAP, a job's (dimalign/film_umap.py)

BESIDE_RESULT = (GEOMETRY, TELEMETRY, WEIGHTS)  # a finished result's other files
FINISHED = (RESULT, *BESIDE_RESULT)  # everything a finished run keeps (an unlearning run: FILM too)
