"""The end-to-end demo on embedded defaults: characters → sensors → training → generations → checks → report.

Every run goes through the persistent Dagster instance in DAGSTER_HOME, so `dagster dev` afterwards shows the
runs, the lineage and the check results.
"""

import os
import time
from importlib import resources
from pathlib import Path

import click

# The demo runs on the same defaults as `dagster dev`, so the daemon finds nothing left to do afterwards: every
# LoRA-enabled character is trained for z-image-turbo, flux and qwen-image (LORA_PIPELINES_TRAIN_BASE_MODELS).
# Two characters with a LoRA on the shared base models (Obama, Biden), one without (Tom Hanks); one-2.1 runs no
# LoRA, so Obama's generations there show his face match without a LoRA (face swap from a training photo).
LORA_CHARACTERS = ("Barack Obama", "Joe Biden")
GENERATIONS = [  # (character, model, prompt, count)
    ("Barack Obama", "flux", "portrait photo in a sunlit park, 85mm", 4),
    ("Barack Obama", "z-image-turbo", "cinematic portrait at night, city lights", 4),
    ("Barack Obama", "qwen-image", "portrait photo, golden hour, film grain", 2),
    ("Barack Obama", "one-2.1", "portrait photo by a window", 3),
    ("Joe Biden", "flux", "portrait photo at a press conference", 4),
    ("Joe Biden", "z-image-turbo", "portrait photo on a beach", 4),
    ("Tom Hanks", "flux", "portrait photo on a film set", 4),
]
TRAINING_DEADLINE_S = 300.0  # how long the demo waits for its trainings to end
# The registry packages hold one photo of Biden: the demo trains from one photo (a weak LoRA, which its face match
# shows) unless LORA_PIPELINES_MIN_PHOTOS says otherwise. The product's default minimum is 5.
DEMO_MIN_PHOTOS = "1"
CURSORS_FILE = "lora_pipelines_demo_cursors.json"  # in DAGSTER_HOME, beside the instance it belongs to


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:6.1f}s] {message}", err=False)


def _prepare_environment(home: Path) -> None:
    os.environ["LORA_PIPELINES_HOME"] = str(home)
    os.environ.setdefault("LORA_PIPELINES_MIN_PHOTOS", DEMO_MIN_PHOTOS)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():  # the package's copy: a checkout's dagster.yaml is not there once installed
        instance_yaml.write_bytes((resources.files("lora_pipelines") / "templates" / "dagster.yaml").read_bytes())


def where_it_lives(home: Path, ctx) -> str:
    """The demo's first line: the app database and object store actually in use (env may point them elsewhere)."""
    from lora_pipelines.store.database import display_url

    return (f"home {home}; app database {display_url(ctx.db.url)}; object store {ctx.store.url}; "
            f"DAGSTER_HOME {os.environ['DAGSTER_HOME']}")


def run_demo(home: Path) -> dict:
    say = Progress()
    _prepare_environment(home)
    import dagster as dg

    from lora_pipelines.definitions import defs as definitions
    from lora_pipelines.demo.feedback import record_demo_feedback
    from lora_pipelines.demo.photos import fetch_demo_photos
    from lora_pipelines.demo.sensor_runs import SensorCursors, execute_request, new_run_requests
    from lora_pipelines.reporting import feedback
    from lora_pipelines.reporting.metrics import face_match_summary, headline
    from lora_pipelines.services.characters import add_character, photos_in
    from lora_pipelines.services.context import PipelineContext
    from lora_pipelines.store.characters import CharactersRepository
    from lora_pipelines.store.generation_jobs import GenerationJobsRepository
    from lora_pipelines.store.lora_models import LoraModelsRepository

    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    say(where_it_lives(home, ctx))
    say("fetching demo photos (real photos: face_recognition 1.3.0 and insightface 2.1 sdists)")
    say(f"minimum usable photos to train: {ctx.settings.min_photos}"
        + (" (lowered for the demo: the packages hold one photo of Biden)"
           if str(ctx.settings.min_photos) == DEMO_MIN_PHOTOS else ""))
    # LORA_PIPELINES_DEMO_PHOTOS_DIR: a folder with barack_obama/, joe_biden/, tom_hanks/ (tests use ../shared/faces)
    folders = fetch_demo_photos(Path(os.environ.get("LORA_PIPELINES_DEMO_PHOTOS_DIR") or home / "demo_photos"))

    repo = CharactersRepository(ctx.db)
    existing = {c.name: c for c in repo.list(limit=1000)}
    characters = {}
    for name, folder in folders.items():
        if name in existing:
            characters[name] = existing[name]
            continue
        lora_enabled = name in LORA_CHARACTERS  # Tom Hanks stays without LoRA: the fallback path
        characters[name], skipped = add_character(ctx, name, photos_in(folder), lora_enabled=lora_enabled)
        photos = len(characters[name].photo_keys)
        say(f"character {characters[name].id} {name}: {photos} photo{'' if photos == 1 else 's'}, "
            f"LoRA {'enabled' if lora_enabled else 'disabled'}" + (f", skipped {skipped}" if skipped else ""))

    # the persistent instance in DAGSTER_HOME (so `dagster dev` shows the runs); an in-memory one on request
    ephemeral = bool(os.environ.get("LORA_PIPELINES_DEMO_EPHEMERAL"))
    cursors = SensorCursors(None if ephemeral else Path(os.environ["DAGSTER_HOME"]) / CURSORS_FILE)
    defs = definitions()
    with dg.DagsterInstance.ephemeral() if ephemeral else dg.DagsterInstance.get() as instance:
        say("training: new_characters sensor → training_job per character × base model")
        for request in new_run_requests(instance, defs, "new_characters", cursors, say):
            execute_request(instance, defs, "training_job", request, say, sensor_name="new_characters")
        # the trainings run on the GPU side; training_completion requests lora_artifact for each as it ends
        lora_rows = LoraModelsRepository(ctx.db)
        deadline = time.monotonic() + TRAINING_DEADLINE_S
        while True:
            for request in new_run_requests(instance, defs, "training_completion", cursors, say):
                execute_request(instance, defs, "training_job", request, say, sensor_name="training_completion")
            if not lora_rows.list_by_status("training", limit=1) or time.monotonic() > deadline:
                break
            time.sleep(1.0)

        jobs = GenerationJobsRepository(ctx.db)
        enqueued: list[int] = []
        for name, model, prompt, count in GENERATIONS:
            ids = jobs.enqueue(characters[name].id, model, prompt, count=count)
            enqueued.extend(ids)
            say(f"enqueued {count} {model} generation(s) for {name}: jobs {ids[0]}–{ids[-1]}")
        say("generation: pending_generations sensor → generation_job per batch (checks run with it)")
        for request in new_run_requests(instance, defs, "pending_generations", cursors, say):
            execute_request(instance, defs, "generation_job", request, say, sensor_name="pending_generations")

        csv_path = home / "demo_feedback.csv"
        imported = record_demo_feedback(ctx, csv_path, enqueued)
        if imported is not None:
            say(f"feedback: {imported.ratings} ratings imported from {csv_path} ({imported.lora_jobs} of LoRA "
                "generations; stand-in users: 'better' when the face matched, 'worse' when not)")

        say("report: report_job")
        execute_request(instance, defs, "report_job", dg.RunRequest(run_key=f"demo-report-{time.time():.0f}"), say)
        [latest] = instance.fetch_materializations(dg.AssetKey("lora_quality_report"), limit=1).records
        prefix = latest.asset_materialization.metadata["prefix"].value  # reports/{day}, or {day}-N after the first

    numbers = headline(ctx.db)
    report_uri = ctx.store.uri(f"{prefix}/report.html")
    per_character = {name: character_face_match(ctx.db, c.id) for name, c in characters.items()}
    say("done")
    return {"report": report_uri, "metrics": numbers, "seconds": round(time.monotonic() - say.started, 1),
            "user_satisfaction": feedback.summary(ctx.db), "characters": per_character,
            "recognisers": face_match_summary(ctx.db)["recogniser_disagreement"]}


def character_face_match(db, character_id: int) -> dict:
    """One character's face match with and without LoRA, held-out vs in-sample, by dlib and SFace."""
    from lora_pipelines.reporting.metrics import face_match_summary
    from lora_pipelines.store.tables import GenerationJobRow

    return face_match_summary(db, where=(GenerationJobRow.character_id == character_id,))

