"""The control room: a "Migrations" page in the Airflow UI, served by a FastAPI app in the API server."""
