# One image for the API and the worker; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml constraints.txt README.md ./
COPY freshrag freshrag
COPY freshrag_client freshrag_client
COPY ingest ingest
COPY retrieval retrieval
COPY api api
COPY evals evals
RUN pip install -c constraints.txt . \
 && pip install -c constraints.txt --no-deps unstructured-inference==1.6.14
EXPOSE 8000
CMD ["freshrag", "serve"]
