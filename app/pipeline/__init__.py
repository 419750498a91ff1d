"""The ingestion pipeline: intake, the stage work queue, the workers that run the stages."""
