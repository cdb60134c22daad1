import pytest


@pytest.mark.django_db
def test_it_reports_database_and_broker_state(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"] in {"eager", "ok"}


@pytest.mark.django_db
def test_it_serves_the_openapi_schema(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert b"openapi" in response.content


def test_it_serves_prometheus_metrics(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"python_info" in response.content
