# The gRPC service's image (terraform/modules/grpc_service): the common package with its grpc extra,
# serving featurestore.v1 with fs-grpc. Built by Cloud Build from the repository root:
#   docker build -f shared/grpc.Dockerfile -t <registry>/feature-store-grpc:<version> .
FROM python:3.11-slim-bookworm
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY sql ./sql
# Editable, so stores/sql_files.py finds sql/ beside shared/ (as in the repository).
RUN pip install --no-cache-dir -e '.[grpc]' && useradd --system --no-create-home fs
USER fs
EXPOSE 50051
ENTRYPOINT ["fs-grpc"]
CMD ["--address", "0.0.0.0:50051", "--workers", "2"]
