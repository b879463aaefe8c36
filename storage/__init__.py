"""SQLite storage: users, quotas, jobs, images, ratings."""
