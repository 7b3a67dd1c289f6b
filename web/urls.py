from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from . import health, pages, views

urlpatterns = [
    path("favicon.ico", RedirectView.as_view(url=static("chat/favicon.svg"), permanent=True)),
    path("", pages.index, name="chat-index"),
    path("healthz", health.healthz, name="healthz"),
    path("threads/<int:thread_id>/", pages.index, name="chat-thread"),
    path("api/threads/", views.threads, name="api-threads"),
    path("api/threads/<int:thread_id>/", views.thread_detail, name="api-thread"),
    path("api/threads/import/", views.import_thread, name="api-thread-import"),
    path("api/threads/<int:thread_id>/export/", views.export_thread, name="api-thread-export"),
    path("api/agents/", views.agents, name="api-agents"),
    path("api/search/", views.search_messages, name="api-search"),
]
