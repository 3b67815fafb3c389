// Starts Swagger UI on /docs: the settings FastAPI's own page gives it, in a file of its own so
// that the page needs no inline script (the gateway's Content-Security-Policy allows none).
"use strict";

window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
