"""The operator's dashboard, served by the api under ``/ui`` (see ``routes.ui_router``)."""
