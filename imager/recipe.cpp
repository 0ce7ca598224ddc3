// placeholder, replaced by the recipe parser
namespace cairn::imager {}
