"""The product's quality numbers and the LoRA quality report: `metrics` (rates over a window), and the report's
`queries` (SQL aggregation), `tables`, `plots` and `rendering`, put together by `report`. No Dagster here: check
results recorded by Dagster come in as plain `tables.CheckOutcome`s."""
