"""`lora-pipelines generate --character ID --model MODEL --prompt TEXT [--count N] [--strength S] [--lora ID]
[--wait]`."""

from __future__ import annotations

import json
import time

import click


@click.command()
@click.option("--character", "character_id", required=True, type=int, help="Character id (see `status`).")
@click.option("--model", required=True, help="A registry model: z-image-turbo, flux, qwen-image, one-2.1, one-2.2.")
@click.option("--prompt", required=True, help="Plain text; the LoRA's trigger word is put in front when one is used.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100), help="Jobs to enqueue.")
@click.option("--wait", is_flag=True,
              help="Launch generation_job for them on this home's Dagster instance (recorded: run, materialization, "
                   "checks), wait, and print each job with its output URLs.")
@click.option("--timeout", default=600.0, show_default=True, type=float,
              help="Seconds --wait may take, waiting also for jobs another run claimed first.")
@click.option("--strength", type=float, default=None,
              help="LoRA strength from 0 to 2 (default: the model's, see docs). The CLIP strength is scaled alike.")
@click.option("--lora", "lora_id", type=int, default=None,
              help="Use this LoRA (a ready one of the character, for the model's base model), not the active one.")
def generate(character_id: int, model: str, prompt: str, count: int, wait: bool, timeout: float,
             strength: float | None, lora_id: int | None) -> None:
    """Enqueue generation jobs for a character."""
    from lora_pipelines.domain.model_registry import UnknownModelError, get_model
    from lora_pipelines.domain.prompts import apply_trigger_word
    from lora_pipelines.services.enqueue import GenerationRequestError, enqueue_generations
    from lora_pipelines.store.characters import CharactersRepository
    from lora_pipelines.store.generation_jobs import GenerationJobsRepository, check_strength

    try:
        get_model(model)
        apply_trigger_word(prompt, None)
        check_strength(strength)
    except (UnknownModelError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    from lora_pipelines.cli.context import open_context

    ctx = open_context()
    if CharactersRepository(ctx.db).get(character_id) is None:
        raise click.ClickException(f"character {character_id} does not exist")
    jobs = GenerationJobsRepository(ctx.db)
    try:
        ids = enqueue_generations(ctx, character_id, model, prompt, count, strength=strength, lora_id=lora_id)
    except GenerationRequestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"enqueued generation jobs {', '.join(map(str, ids))}")
    if not wait:
        click.echo("the pending_generations sensor runs them (`dagster dev` or dagster-daemon); "
                   "`status` shows their progress, or use --wait to run them now", err=True)
        return
    from lora_pipelines.jobs.cli_runs import failure_message, run_job_here
    from lora_pipelines.services.outputs import output_urls

    deadline = time.monotonic() + timeout
    # the generation job on this home's Dagster instance: its run, materialization and checks are recorded there
    result = run_job_here(ctx.settings, "generation_job",
                          run_config={"ops": {"generation_outputs": {"config": {"job_ids": ids}}}},
                          tags={"lora_pipelines/jobs": f"{ids[0]}-{ids[-1]}"})
    click.echo(f"generation_job run {result.run_id} on {ctx.settings.dagster_home}: "
               f"{'succeeded' if result.success else 'FAILED: ' + failure_message(result)}", err=True)
    # a job another worker (the pending_generations sensor's run) claimed first is finished there: wait for it
    finished = {}
    while True:
        for job_id in ids:
            job = finished.get(job_id) or jobs.get(job_id)
            if job.status in ("succeeded", "failed"):
                finished[job_id] = job
        if len(finished) == len(ids):
            break
        if time.monotonic() > deadline:
            waiting = ", ".join(str(i) for i in ids if i not in finished)
            raise click.ClickException(f"timed out after {timeout:.0f}s; jobs {waiting} are still running elsewhere")
        time.sleep(0.5)
    for job_id in ids:
        job = finished[job_id]
        click.echo(json.dumps({
            "id": job.id, "status": job.status, "mode": job.mode, "lora_model_id": job.lora_model_id,
            "trigger_word": job.trigger_word, "lora_skipped_reason": job.lora_skipped_reason,
            "prompt": job.sent_prompt, "output_keys": job.output_keys,
            "requested_lora_model_id": job.requested_lora_model_id, "requested_strength": job.requested_strength,
            "lora_strength": job.lora_strength,
            "output_uris": [ctx.store.uri(k) for k in job.output_keys],
            "output_urls": output_urls(ctx.store, list(job.output_keys)), "face_match": job.face_match,
            "error": job.error, "dagster_run_id": result.run_id,
        }))
