"""Mounted at /webhooks/stripe by config/urls.py (outside /api/v1/: Stripe signs, no API key)."""

from django.urls import path

from billing.webhooks import stripe_webhook

urlpatterns = [path("", stripe_webhook, name="stripe-webhook")]
