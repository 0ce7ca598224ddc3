// placeholder, replaced by the layout model
namespace cairn::partitions {}
