"""prepare_dataset: the photos are analysed once per photo set, whatever the number of base models."""

from __future__ import annotations

from conftest import person_photos
from lora_pipelines.services.characters import add_character
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.training import prepare_dataset
from lora_pipelines.settings import Settings


class CountingAnalyzer:
    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def analyze(self, img, **kwargs):
        self.calls += 1
        return self.inner.analyze(img, **kwargs)


def test_each_base_model_gets_the_same_dataset_from_one_analysis(lp_home, faces_dir):
    from lora_pipelines.faces.embeddings import FaceAnalyzer

    ctx = PipelineContext.from_settings(Settings(home=lp_home, min_photos=3))
    ctx.db.upgrade()
    counting = CountingAnalyzer(FaceAnalyzer())
    ctx.__dict__["analyzer"] = counting
    character, _ = add_character(ctx, "Matt Damon", person_photos(faces_dir, "matt_damon"), lora_enabled=True)

    flux = prepare_dataset(ctx, character.id, "flux")
    analysed = counting.calls
    zimage = prepare_dataset(ctx, character.id, "z-image-turbo")

    assert analysed >= len(character.photo_keys) and counting.calls == analysed
    assert (zimage.dataset_hash, zimage.zip_sha256, zimage.usable) == (flux.dataset_hash, flux.zip_sha256, flux.usable)
    assert zimage.prefix.startswith("datasets/z-image-turbo-character-") and zimage.base_model == "z-image-turbo"
    assert ctx.store.get_bytes(zimage.zip_key) == ctx.store.get_bytes(flux.zip_key)

    # new photos are a new photo set: analysed again
    more = person_photos(faces_dir, "matt_damon")[:1]
    ctx.store.put_bytes(f"characters/{character.id}/photos/extra.jpg", more[0].read_bytes())
    from lora_pipelines.store.characters import CharactersRepository

    CharactersRepository(ctx.db).add_photo_keys(character.id, [f"characters/{character.id}/photos/extra.jpg"])
    prepare_dataset(ctx, character.id, "flux")
    assert counting.calls > analysed
