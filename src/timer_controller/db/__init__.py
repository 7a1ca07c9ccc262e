"""The only room that speaks SQL: models, statements, the repository, set-up, the database clock."""
