.PHONY: up down logs test run lint

# Build and start the service in Docker (needs WEBHOOK_SECRET in the environment).
up:
	docker compose up -d --build

# Stop it and delete its database volume.
down:
	docker compose down -v

logs:
	docker compose logs -f api

# The project's test command, as in the README and .ci/run.
test:
	cargo test

# Run the service without Docker on ./data/app.db.
run:
	WEBHOOK_SECRET=$${WEBHOOK_SECRET:-testsecret} DATABASE_URL=$${DATABASE_URL:-sqlite:///data/app.db} cargo run --release

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
