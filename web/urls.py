from django.urls import path

from . import health, pages, views

urlpatterns = [
    path("", pages.index, name="chat-index"),
    path("healthz", health.healthz, name="healthz"),
    path("threads/<int:thread_id>/", pages.index, name="chat-thread"),
    path("api/threads/", views.threads, name="api-threads"),
    path("api/threads/<int:thread_id>/", views.thread_detail, name="api-thread"),
]
