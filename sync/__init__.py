"""The domain: inbox, task store, event application, jobs, storage backends, CLI."""
